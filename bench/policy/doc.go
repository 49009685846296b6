// Package policybench measures Cordon's policy compiler and flow decision
// at hospital-system scale and, in the same run, OPA evaluating an
// equivalent Rego policy on the same requests. It is its own module so OPA
// never enters the product's go.mod. Run it with ./run.sh.
package policybench
