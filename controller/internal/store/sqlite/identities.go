package sqlite

// migrationIdentities (schema 7): users' links to OIDC identity providers
// (issue 5).
const migrationIdentities = `-- reserved`
