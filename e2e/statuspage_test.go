package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestStatusPage: 'cordon up --ui' serves the status page in the nurse's
// namespace, fed by the running tunnel: the page says who is signed in and
// each app's state from the reach classifier as the world changes (an
// admin ends the session, the page's own sign-in brings it back, the
// gateway dies). The page in a browser is client/internal/ui's
// TestPageInBrowser; this is the whole system behind it.
func TestStatusPage(t *testing.T) {
	w := newWorld(t, withClientArgs("--ui"))
	ehr := w.svcs["ehr"]
	w.waitReach(w.nurse, ehr, 15*time.Second)

	link := regexp.MustCompile(`http://127\.0\.0\.1:\d+/\?token=\S+`).FindString(w.nurse.proc.logs())
	if link == "" {
		t.Fatalf("'cordon up --ui' printed no start link:\n%s", tail(w.nurse.proc.logs(), 20))
	}
	base := link[:strings.Index(link, "/?")]
	hc := w.nurse.ns.httpClient(2*time.Second, 40*time.Second, nil)
	fetch := func(req *http.Request) (int, string) {
		t.Helper()
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", req.Method, req.URL, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	get := func(u string) (int, string) {
		req, err := http.NewRequest(http.MethodGet, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		return fetch(req)
	}

	// Without the link: refused.
	if code, body := get(base + "/"); code != http.StatusForbidden {
		t.Fatalf("page without the start link: %d %q, want 403", code, body)
	}
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	hc.Jar = jar
	code, page := get(link)
	if code != http.StatusOK || !strings.Contains(page, "Signed in as <b>nurse</b>") || !strings.Contains(page, "Time left:") {
		t.Fatalf("page from the start link: %d\n%s", code, page)
	}
	app := func(name, reason string) string { return fmt.Sprintf(`data-app="%s" data-reason="%s"`, name, reason) }
	if !strings.Contains(page, app("ehr", "ok")) {
		t.Errorf("ehr is not reachable on the page:\n%s", page)
	}
	waitPage := func(what string, timeout time.Duration, traffic bool, want ...string) string {
		t.Helper()
		var last string
		waitFor(t, timeout, what, func() error {
			if traffic { // the gateway prober runs only while the device sends app traffic
				w.nurse.getTimeout(ehr.addr, 200*time.Millisecond)
			}
			_, last = get(base + "/")
			for _, s := range want {
				if !strings.Contains(last, s) {
					return fmt.Errorf("page lacks %q", s)
				}
			}
			return nil
		})
		return last
	}

	// An administrator ends the session: the page says so and offers the
	// sign-in.
	w.mustCtl("", "session", "end", "--user", "nurse", "--comment", "e2e: status page")
	page = waitPage("the page to show the ended session", 10*time.Second, false,
		`id="apps-closed"`, "an administrator ended your session", `id="signin-password"`)
	if strings.Contains(page, app("ehr", "ok")) {
		t.Errorf("ehr still shown reachable after the session ended:\n%s", page)
	}

	// The page's sign-in (password and authenticator code): the running
	// tunnel gets the new session and ehr is reachable again.
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF token on the page:\n%s", page)
	}
	totp, err := w.nurse.nextCode()
	if err != nil {
		t.Fatal(err)
	}
	form := url.Values{"csrf": {m[1]}, "user": {"nurse"}, "password": {w.nurse.password}, "code": {totp}}
	req, err := http.NewRequest(http.MethodPost, base+"/signin/password", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", base)
	if code, page := fetch(req); code != http.StatusOK || !strings.Contains(page, "Signed in as <b>nurse</b>.") {
		t.Fatalf("sign-in from the page: %d\n%s", code, page)
	}
	waitPage("ehr reachable again after the page's sign-in", 15*time.Second, false, app("ehr", "ok"))
	w.waitReach(w.nurse, ehr, 15*time.Second)

	// The gateway dies: the page says the gateway does not answer and that
	// Cordon retries.
	w.gateway.stop()
	waitPage("the page to show the gateway unreachable", 20*time.Second, true,
		app("ehr", "gateway-unreachable"), "retrying automatically")
	if s := w.nurse.proc.exited(); s != "" {
		t.Fatalf("'cordon up --ui' %s", s)
	}
}
