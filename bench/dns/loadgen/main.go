// Command loadgen drives a DNS server at a fixed concurrency (closed loop)
// and reports queries per second and latency percentiles. Each worker asks
// as several devices: it binds one UDP socket per device address from the
// workload file, so a server that identifies askers by source address (the
// Cordon gateway) sees them as different devices.
package main

import (
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

type device struct {
	conn             *net.UDPConn
	entitled, hidden string
}

func main() {
	server := flag.String("server", "127.0.0.1:5300", "DNS server (UDP)")
	workload := flag.String("workload", "workload.txt", "lines of 'source-address entitled-name hidden-name'")
	workers := flag.Int("workers", 64, "concurrent outstanding queries")
	duration := flag.Duration("duration", 10*time.Second, "measurement time (after 1 s of warm-up)")
	label := flag.String("label", "", "name printed with the result")
	flag.Parse()

	raddr, err := net.ResolveUDPAddr("udp", *server)
	if err != nil {
		log.Fatal(err)
	}
	b, err := os.ReadFile(*workload)
	if err != nil {
		log.Fatal(err)
	}
	var devs []*device
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(l)
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(f[0])})
		if err != nil {
			log.Fatalf("bind %s: %v", f[0], err)
		}
		devs = append(devs, &device{conn: c, entitled: f[1], hidden: f[2]})
	}

	var measuring atomic.Bool
	var stop atomic.Bool
	var mu sync.Mutex
	var lat []time.Duration
	var noerror, nxdomain, other, timeouts atomic.Int64
	var wg sync.WaitGroup
	for w := range *workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			var mine []*device
			for i := w; i < len(devs); i += *workers {
				mine = append(mine, devs[i])
			}
			local := make([]time.Duration, 0, 1<<16)
			buf := make([]byte, 1500)
			q := new(dns.Msg)
			for i := 0; !stop.Load(); i++ {
				d := mine[i%len(mine)]
				name := d.entitled
				if rng.IntN(2) == 0 {
					name = d.hidden
				}
				q.SetQuestion(name, dns.TypeA)
				q.Id = uint16(rng.Uint32())
				out, _ := q.Pack()
				t0 := time.Now()
				d.conn.WriteToUDP(out, raddr)
				d.conn.SetReadDeadline(t0.Add(time.Second))
				var r dns.Msg
				for {
					n, _, err := d.conn.ReadFromUDP(buf)
					if err != nil {
						timeouts.Add(1)
						break
					}
					if r.Unpack(buf[:n]) == nil && r.Id == q.Id {
						break
					}
				}
				el := time.Since(t0)
				if !measuring.Load() {
					continue
				}
				local = append(local, el)
				switch r.Rcode {
				case dns.RcodeSuccess:
					noerror.Add(1)
				case dns.RcodeNameError:
					nxdomain.Add(1)
				default:
					other.Add(1)
				}
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		})
	}
	time.Sleep(time.Second)
	measuring.Store(true)
	start := time.Now()
	time.Sleep(*duration)
	measuring.Store(false)
	el := time.Since(start)
	stop.Store(true)
	wg.Wait()
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(float64(len(lat))*p))]
	}
	fmt.Printf("%-8s qps=%.0f p50=%v p99=%v p999=%v noerror=%d nxdomain=%d other=%d timeouts=%d devices=%d workers=%d\n",
		*label, float64(len(lat))/el.Seconds(), pct(0.50).Round(time.Microsecond), pct(0.99).Round(time.Microsecond),
		pct(0.999).Round(time.Microsecond), noerror.Load(), nxdomain.Load(), other.Load(), timeouts.Load(), len(devs), *workers)
}
