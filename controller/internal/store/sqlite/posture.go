package sqlite

// migrationPosture (schema 6): device posture reports (issue 5).
const migrationPosture = `-- reserved`
