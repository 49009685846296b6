// Package compose checks deploy/compose/compose.yaml with compose-go, the
// loader Docker Compose itself uses: it must load and validate against the
// Compose schema, and run what the image provides with what each service
// needs and no more (see compose_test.go).
package compose
