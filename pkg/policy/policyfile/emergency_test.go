package policyfile

import (
	"strings"
	"testing"
)

// TestEmergencyApps: "emergency: true" marks an app for break-glass
// access; it is off by default, and anything but a boolean is an error
// with its position.
func TestEmergencyApps(t *testing.T) {
	const src = `version: 1
segments:
  lan: {prefixes: [10.20.0.0/24]}
apps:
  ehr: {segment: lan, addresses: [10.20.0.10], ports: [tcp/443], classification: internal, emergency: true}
  wiki: {segment: lan, addresses: [10.20.0.12], ports: [tcp/443], classification: internal}
`
	pol, err := Parse("em.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if !pol.Apps["ehr"].Emergency || pol.Apps["wiki"].Emergency {
		t.Fatalf("emergency: ehr %v, wiki %v; want true, false", pol.Apps["ehr"].Emergency, pol.Apps["wiki"].Emergency)
	}
	_, err = Parse("em.yaml", []byte(strings.Replace(src, "emergency: true", "emergency: yes please", 1)))
	if err == nil || !strings.Contains(err.Error(), `em.yaml:5:`) || !strings.Contains(err.Error(), `app "ehr" emergency is "yes please"; write true or false`) {
		t.Fatalf("bad emergency value: %v", err)
	}
}
