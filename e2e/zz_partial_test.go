package e2e

import (
	"fmt"
	"os"
	"testing"
	"time"
)

func TestZZPartial(t *testing.T) {
	binDir = "/tmp/e2ebin"
	seq := worldSeq.Add(1)
	id := fmt.Sprintf("%s%dx%d", nsPrefix, os.Getpid(), seq)
	dir := t.TempDir()
	w := &world{t: t, id: id, dir: dir, logs: &logDumper{}, gwIface: ifaceName("g", seq)}
	w.netns()
	t.Cleanup(func() { w.logs.dump(t) })
	w.svcs = startServices(t, w.app)
	w.startController()
	w.configure()
	w.startGateway()
	s := w.createUser("nurse", "pw pw pw pw pw")
	t.Log(s)
	time.Sleep(2 * time.Second)
	t.Log(mustRun(t, "ip", "netns", "exec", w.gw.name, "wg", "show", w.gwIface))
	t.Log(mustRun(t, "ip", "netns", "exec", w.gw.name, "nft", "list", "ruleset"))
	for _, e := range w.audit("--limit", "100") {
		t.Log(e)
	}
	t.Cleanup(func() { t.Log("teardown start", time.Now()) })
	t.Log(time.Now())
	t.Log(w.gateway.logs())
	t.Log(w.controller.logs())
}
