package store

// AdminStore keeps admin accounts, roles and scoped admin tokens (issue 5).
// Part of [Store].
type AdminStore interface{}
