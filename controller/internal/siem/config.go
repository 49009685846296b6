package siem

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/cordonhq/cordon/pkg/yamlsyntax"
)

// File is the --siem-config file (YAML or JSON), for example:
//
//	hostname: ctl-1.hosp.example        # HOSTNAME of syslog messages; default the machine's name
//	sinks:
//	  - name: splunk                    # [a-z0-9][a-z0-9_-]*, at most 32; names the cursor file
//	    format: syslog                  # syslog (RFC 5424) or ocsf (JSON lines, OCSF 1.3.0)
//	    transport: tls                  # tls, tcp (plain: only when written here) or file
//	    address: siem.hosp.example:6514
//	    ca_file: /etc/cordon/siem-ca.pem     # the receiver's certificate must chain to it
//	    cert_file: /etc/cordon/siem.pem      # optional client certificate
//	    key_file: /etc/cordon/siem.key
//	    server_name: siem.hosp.example       # default the address's host
//	  - name: lake
//	    format: ocsf
//	    transport: file
//	    path: /var/log/cordon/audit.ocsf.jsonl  # 0600; appended
//	    max_size: 104857600                     # rotate past 100 MB (0: never)
//	    alert_lag: 10000                        # alert when this many records behind
//	    alert_after: 5m                         # ... or behind for this long
type File struct {
	Hostname string       `yaml:"hostname"`
	Sinks    []SinkConfig `yaml:"sinks"`
}

// SinkConfig is one sink.
type SinkConfig struct {
	Name      string `yaml:"name"`
	Format    Format `yaml:"format"`
	Transport string `yaml:"transport"`
	Address   string `yaml:"address"`
	CAFile    string `yaml:"ca_file"`
	CertFile  string `yaml:"cert_file"`
	KeyFile   string `yaml:"key_file"`
	// ServerName is the name the receiver's certificate must carry.
	ServerName string `yaml:"server_name"`
	Path       string `yaml:"path"`
	MaxSize    int64  `yaml:"max_size"`
	// AlertLag: records behind that raise an audit.export.lag alert
	// (default DefaultAlertLag).
	AlertLag int64 `yaml:"alert_lag"`
	// AlertAfter: how long the sink may stay behind before the alert
	// (default DefaultAlertAfter).
	AlertAfter Duration `yaml:"alert_after"`
	// AckTimeout: how long a write may wait for the receiver to
	// acknowledge it before the connection is dropped and the batch sent
	// again (default 30s).
	AckTimeout Duration `yaml:"ack_timeout"`
}

// Format is what a sink writes.
type Format string

const (
	FormatSyslog Format = "syslog" // RFC 5424, octet-counted (RFC 5425 / RFC 6587 §3.4.1)
	FormatOCSF   Format = "ocsf"   // JSON lines, OCSF OCSFVersion
)

// Transports.
const (
	TransportTCP  = "tcp"
	TransportTLS  = "tls"
	TransportFile = "file"
)

// Defaults of the alert thresholds.
const (
	DefaultAlertLag   = 10_000
	DefaultAlertAfter = 5 * time.Minute
)

// Duration is a Go duration written as text ("5m").
type Duration time.Duration

func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration like 30s or 5m", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

func (c SinkConfig) ackTimeout() time.Duration {
	if c.AckTimeout > 0 {
		return time.Duration(c.AckTimeout)
	}
	return 30 * time.Second
}

func (c SinkConfig) alertLag() int64 {
	if c.AlertLag > 0 {
		return c.AlertLag
	}
	return DefaultAlertLag
}

func (c SinkConfig) alertAfter() time.Duration {
	if c.AlertAfter > 0 {
		return time.Duration(c.AlertAfter)
	}
	return DefaultAlertAfter
}

// Target is where the sink sends: its address or file.
func (c SinkConfig) Target() string {
	if c.Transport == TransportFile {
		return c.Path
	}
	return c.Address
}

// MaxConfigSize bounds the config file.
const MaxConfigSize = 64 << 10

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

// LoadFile reads and checks a config file.
func LoadFile(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("siem config: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("siem config %s: %w", path, err)
	}
	if len(b) > MaxConfigSize {
		return nil, fmt.Errorf("siem config %s: larger than %d bytes", path, MaxConfigSize)
	}
	cfg, err := ParseFile(b)
	if err != nil {
		return nil, fmt.Errorf("siem config %s: %w", path, err)
	}
	return cfg, nil
}

// ParseFile parses and checks a config: unknown keys, a missing or
// unknown format or transport, a tls sink without ca_file, half a client
// key pair, and two sinks of one name are errors.
func ParseFile(b []byte) (*File, error) {
	var cfg File
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty file: list at least one sink under sinks:")
		}
		return nil, yamlsyntax.Wrap(err, b)
	}
	if len(cfg.Sinks) == 0 {
		return nil, errors.New("no sinks: list at least one under sinks:")
	}
	seen := map[string]bool{}
	for i, s := range cfg.Sinks {
		if err := s.check(); err != nil {
			return nil, fmt.Errorf("sink %d (%q): %w", i+1, s.Name, err)
		}
		if seen[s.Name] {
			return nil, fmt.Errorf("sink %d: name %q used twice (each sink has its own cursor, named after it)", i+1, s.Name)
		}
		seen[s.Name] = true
	}
	return &cfg, nil
}

func (s SinkConfig) check() error {
	if !nameRE.MatchString(s.Name) {
		return fmt.Errorf("name %q: want 1 to 32 of a-z, 0-9, '-' and '_', starting with a letter or digit", s.Name)
	}
	switch s.Format {
	case FormatSyslog, FormatOCSF:
	default:
		return fmt.Errorf("format %q: want syslog or ocsf", s.Format)
	}
	switch s.Transport {
	case TransportTCP, TransportTLS:
		if _, _, err := net.SplitHostPort(s.Address); err != nil {
			return fmt.Errorf("address %q: want host:port (%v)", s.Address, err)
		}
		if s.Path != "" || s.MaxSize != 0 {
			return errors.New("path and max_size are for transport file")
		}
	case TransportFile:
		if s.Path == "" {
			return errors.New("transport file needs path")
		}
		if s.Format != FormatOCSF {
			return errors.New("transport file writes format ocsf (JSON lines); send syslog over tcp or tls")
		}
		if s.Address != "" || s.CAFile != "" || s.CertFile != "" || s.KeyFile != "" || s.ServerName != "" {
			return errors.New("address, ca_file, cert_file, key_file and server_name are for transports tcp and tls")
		}
		if s.MaxSize < 0 {
			return errors.New("max_size must not be negative")
		}
	case "":
		return errors.New("transport missing: tls, tcp (plain text: say so explicitly) or file")
	default:
		return fmt.Errorf("transport %q: want tls, tcp or file", s.Transport)
	}
	if s.Transport == TransportTLS && s.CAFile == "" {
		return errors.New("transport tls needs ca_file: the CA the receiver's certificate chains to")
	}
	if s.Transport == TransportTCP && (s.CAFile != "" || s.CertFile != "" || s.KeyFile != "") {
		return errors.New("ca_file, cert_file and key_file are for transport tls; transport tcp is plain text")
	}
	if (s.CertFile == "") != (s.KeyFile == "") {
		return errors.New("cert_file and key_file go together")
	}
	if s.AlertLag < 0 || s.AlertAfter < 0 || s.AckTimeout < 0 {
		return errors.New("alert_lag, alert_after and ack_timeout must not be negative")
	}
	return nil
}
