package sqlite

// migrationAdmins (schema 5): admin accounts, roles, scoped tokens (issue 5).
const migrationAdmins = `-- reserved`
