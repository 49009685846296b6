package policybench

import (
	"context"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/policy/policyfile"
)

func size() Size {
	if os.Getenv("POLICYBENCH_SIZE") == "small" {
		return Small
	}
	return Hospital
}

// Cordon, OPA and the reference evaluator agree on every request.
func TestAgreeWithOPA(t *testing.T) {
	ctx := context.Background()
	src, devices := Generate(Small, 1)
	pol, err := policyfile.Parse("small.yaml", src)
	if err != nil {
		t.Fatal(err)
	}
	c, err := pol.Compile("", devices)
	if err != nil {
		t.Fatal(err)
	}
	opa, err := NewOPA(ctx, pol)
	if err != nil {
		t.Fatal(err)
	}
	allowed := 0
	for i, q := range Requests(pol, devices, Small, 1500, 2) {
		got := c.DecideSession(q.Device.Addr, q.Dst, q.Proto, q.Port, &q.Session, q.At)
		ref := pol.Evaluate(policyfile.Request{User: q.Device.User, Tags: q.Device.Tags, Session: q.Session, At: q.At, Dst: q.Dst, Proto: q.Proto, Port: q.Port})
		o, err := opa.Decide(ctx, RegoInput(q))
		if err != nil {
			t.Fatal(err)
		}
		if got.Verdict != ref.Verdict || o != ref.Verdict {
			t.Fatalf("request %d %+v: cordon %v (%v), reference %v (%v), opa %v", i, q, got.Verdict, got.Reason, ref.Verdict, ref.Reason, o)
		}
		if got.Verdict == policy.Allow {
			allowed++
		}
	}
	if allowed == 0 {
		t.Fatal("no request was allowed: the comparison proves nothing")
	}
	t.Logf("1500 requests agree, %d allowed", allowed)
}

func heapMB() float64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapAlloc) / (1 << 20)
}

// TestScale reports compile time and memory at hospital-system size. It
// runs only with POLICYBENCH_SCALE=1 (run.sh sets it).
func TestScale(t *testing.T) {
	if os.Getenv("POLICYBENCH_SCALE") == "" {
		t.Skip("set POLICYBENCH_SCALE=1 (or use run.sh)")
	}
	sz := size()
	src, devices := Generate(sz, 1)
	t.Logf("size: %d devices, %d apps, %d rules + %d deny rules; policy file %.1f MiB", sz.Devices, sz.Apps, sz.Rules, sz.Denies, float64(len(src))/(1<<20))
	before := heapMB()
	start := time.Now()
	pol, err := policyfile.Parse("scale.yaml", src)
	if err != nil {
		t.Fatal(err)
	}
	parse := time.Since(start)
	afterParse := heapMB()

	start = time.Now()
	wire := pol.WireRules("")
	peers := pol.Peers(devices, wire)
	entitle := time.Since(start)
	start = time.Now()
	c, err := policy.Compile(wire, peers)
	if err != nil {
		t.Fatal(err)
	}
	compile := time.Since(start)
	afterCompile := heapMB()
	t.Logf("parse+check: %v (%.0f MiB heap)", parse.Round(time.Millisecond), afterParse-before)
	t.Logf("entitlements (wire rules %d, peers %d): %v", len(wire), len(peers), entitle.Round(time.Millisecond))
	t.Logf("compile all segments into one table set: %v, compiled policy %.0f MiB heap", compile.Round(time.Millisecond), afterCompile-afterParse)
	t.Logf("total parse→compiled: %v", (parse + entitle + compile).Round(time.Millisecond))

	start = time.Now()
	gwWire := pol.WireRules("seg-00")
	gwPeers := pol.Peers(devices, gwWire)
	gc, err := policy.Compile(gwWire, gwPeers)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("one gateway (seg-00: %d wire rules, %d peers): %v", len(gwWire), gc.NumPeers(), time.Since(start).Round(time.Millisecond))
	runtime.KeepAlive(c)
	runtime.KeepAlive(pol)
}

var fixture struct {
	once sync.Once
	c    *policy.Compiled
	opa  *OPA
	reqs []Request
	ins  []ast.Value
	err  error
}

func load(b *testing.B) {
	fixture.once.Do(func() {
		sz := size()
		src, devices := Generate(sz, 1)
		pol, err := policyfile.Parse("scale.yaml", src)
		if err != nil {
			fixture.err = err
			return
		}
		if fixture.c, err = pol.Compile("", devices); err != nil {
			fixture.err = err
			return
		}
		if fixture.opa, err = NewOPA(context.Background(), pol); err != nil {
			fixture.err = err
			return
		}
		fixture.reqs = Requests(pol, devices, sz, 1000, 3)
		for _, q := range fixture.reqs {
			fixture.ins = append(fixture.ins, RegoInput(q))
		}
	})
	if fixture.err != nil {
		b.Fatal(fixture.err)
	}
}

// BenchmarkDecideCordon is a new-flow decision on the compiled policy,
// conditions evaluated from the session (a mix of allows and denies).
func BenchmarkDecideCordon(b *testing.B) {
	load(b)
	reqs := fixture.reqs
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		q := &reqs[i%len(reqs)]
		fixture.c.DecideSession(q.Device.Addr, q.Dst, q.Proto, q.Port, &q.Session, q.At)
		i++
	}
}

// BenchmarkDecideOPA is the same requests through OPA's prepared query
// (input already converted to an ast.Value).
func BenchmarkDecideOPA(b *testing.B) {
	load(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		if _, err := fixture.opa.Decide(ctx, fixture.ins[i%len(fixture.ins)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
