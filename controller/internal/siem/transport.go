package siem

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// transport carries a sink's bytes. Write returns once the bytes are as
// safe as the transport can tell: written and acknowledged by the peer's
// TCP (stream), or written and synced (file). On an error it returns how
// many leading bytes of b were nevertheless accepted (acknowledged by a
// plain TCP receiver; 0 when it cannot tell), so the records in them are
// not sent again. A transport that returned an error is closed and not
// used again; Close then drops whatever is still queued.
type transport interface {
	Write(ctx context.Context, b []byte) (accepted int, err error)
	Close() error
}

// resumer is a transport that can say how far it got on its own: the
// highest record seq and checkpoint size it holds (a file sink reads its
// tail). It wins over the cursor file when ahead of it.
type resumer interface {
	Resume() (seq, checkpoint int64)
}

// errPeerClosed is a stream the receiver closed.
var errPeerClosed = errors.New("the receiver closed the connection")

// streamConn is a TCP or TLS connection to a syslog or JSON receiver.
// Its reader goroutine reads (and drops) whatever the receiver sends, so
// that a close by the receiver is seen before the next write, not after
// it; Close stops it and waits.
type streamConn struct {
	c       net.Conn
	tcp     *net.TCPConn
	closed  chan struct{} // closed by the reader when the receiver closed or the read failed
	readErr error         // why; valid after closed
	done    chan struct{} // the reader returned
	once    sync.Once
	ackWait time.Duration
}

// dialStream connects to cfg's address (TLS per cfg).
func dialStream(ctx context.Context, cfg SinkConfig, tlsCfg *tls.Config) (*streamConn, error) {
	d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	c, err := d.DialContext(ctx, "tcp", cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", cfg.Address, err)
	}
	tcp := c.(*net.TCPConn)
	if tlsCfg != nil {
		tc := tls.Client(c, tlsCfg)
		hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", cfg.Address, err)
		}
		c = tc
	}
	s := &streamConn{c: c, tcp: tcp, closed: make(chan struct{}), done: make(chan struct{}), ackWait: cfg.ackTimeout()}
	go s.read()
	return s, nil
}

func (s *streamConn) read() {
	defer close(s.done)
	_, err := io.Copy(io.Discard, s.c)
	if err == nil {
		err = io.EOF
	}
	s.readErr = err
	close(s.closed)
}

// Write writes b and waits until the receiver's TCP has acknowledged
// every byte of it (the socket's send queue is empty while the
// connection is still up): bytes that reached a receiver which then
// closed are not counted as sent.
//
// Over plain TCP, when the receiver stops acknowledging (a write or ack
// timeout), the bytes it did acknowledge are counted as accepted: the
// records wholly in them are not sent again. Over TLS the acknowledged
// bytes are ciphertext and cannot be mapped back to records, so nothing
// of a failed write counts.
func (s *streamConn) Write(ctx context.Context, b []byte) (int, error) {
	select {
	case <-s.closed:
		return 0, fmt.Errorf("%w (%v)", errPeerClosed, s.readErr)
	default:
	}
	deadline := time.Now().Add(s.ackWait)
	s.c.SetWriteDeadline(deadline)
	n, err := s.c.Write(b)
	if err == nil {
		if err = waitAcked(ctx, s.tcp, deadline); err == nil {
			return len(b), nil
		}
	} else {
		err = fmt.Errorf("write: %w", err)
	}
	if _, plain := s.c.(*net.TCPConn); !plain {
		return 0, err
	}
	queued, up, qerr := sendQueue(s.tcp)
	if qerr != nil || !up {
		return 0, err
	}
	return max(n-queued, 0), err
}

// Close closes the connection gracefully (FIN), also after an error: a
// reset would make the receiver's kernel drop what it acknowledged but
// its program had not read yet, records counted as sent. What was not
// acknowledged may still arrive after this and is also sent again on the
// next connection: the one case of a record arriving twice without a
// crash (docs/audit.md).
func (s *streamConn) Close() error {
	var err error
	s.once.Do(func() {
		err = s.c.Close()
		<-s.done
	})
	return err
}

// fileSink appends to a file (0600), syncing each write; with MaxSize it
// rotates: the file is renamed to PATH.TIMESTAMP and a new one started.
type fileSink struct {
	path    string
	maxSize int64
	now     func() time.Time
	f       *os.File
	size    int64
	seq     int64 // highest record seq found in the tail at open
	cp      int64 // highest checkpoint size found there
}

// openFile opens (or creates) the file, drops a torn last line left by a
// crash in the middle of a write, and reads from its tail how far it got.
func openFile(path string, maxSize int64, now func() time.Time) (*fileSink, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("sink file directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open sink file: %w", err)
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return nil, fmt.Errorf("sink file %s: %w", path, err)
	}
	fs := &fileSink{path: path, maxSize: maxSize, now: now, f: f}
	if err := fs.recover(); err != nil {
		f.Close()
		return nil, fmt.Errorf("sink file %s: %w", path, err)
	}
	return fs, nil
}

// tailSize is how much of a file's end is read to find where it got.
const tailSize = 1 << 20

// recover truncates a torn last line and reads the tail's highest seq.
func (fs *fileSink) recover() error {
	st, err := fs.f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	off := max(size-tailSize, 0)
	buf := make([]byte, size-off)
	if _, err := fs.f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if end := bytes.LastIndexByte(buf, '\n') + 1; end < len(buf) {
		// A torn line: the crash came in the middle of a write, which was
		// therefore not counted as sent.
		if err := fs.f.Truncate(off + int64(end)); err != nil {
			return err
		}
		size = off + int64(end)
		buf = buf[:end]
	}
	fs.size = size
	sc := bufio.NewScanner(bytes.NewReader(buf))
	sc.Buffer(nil, tailSize+1)
	for sc.Scan() {
		var ev struct {
			Metadata struct {
				Sequence int64 `json:"sequence"`
			} `json:"metadata"`
			Unmapped struct {
				Cordon struct {
					Checkpoint *struct {
						Size int64 `json:"size"`
					} `json:"checkpoint"`
				} `json:"cordon"`
			} `json:"unmapped"`
		}
		if json.Unmarshal(sc.Bytes(), &ev) != nil {
			continue // the first line of the tail may be cut
		}
		fs.seq = max(fs.seq, ev.Metadata.Sequence)
		if c := ev.Unmapped.Cordon.Checkpoint; c != nil {
			fs.cp = max(fs.cp, c.Size)
		}
	}
	_, err = fs.f.Seek(size, io.SeekStart)
	return err
}

func (fs *fileSink) Resume() (int64, int64) { return fs.seq, fs.cp }

// Write appends and syncs b. On an error nothing counts as accepted: the
// sink is reopened, which drops a torn last line and reads from the tail
// how far the file got.
func (fs *fileSink) Write(_ context.Context, b []byte) (int, error) {
	if _, err := fs.f.Write(b); err != nil {
		return 0, fmt.Errorf("write %s: %w", fs.path, err)
	}
	if err := fs.f.Sync(); err != nil {
		return 0, fmt.Errorf("sync %s: %w", fs.path, err)
	}
	fs.size += int64(len(b))
	if fs.maxSize > 0 && fs.size >= fs.maxSize {
		if err := fs.rotate(); err != nil {
			return len(b), err
		}
	}
	return len(b), nil
}

// rotate renames the full file aside and starts a new one.
func (fs *fileSink) rotate() error {
	if err := fs.f.Close(); err != nil {
		return err
	}
	old := fs.path + "." + fs.now().UTC().Format("20060102T150405.000000Z")
	for i := 1; ; i++ {
		if _, err := os.Lstat(old); errors.Is(err, os.ErrNotExist) {
			break
		}
		old = fmt.Sprintf("%s.%s-%d", fs.path, fs.now().UTC().Format("20060102T150405.000000Z"), i)
	}
	if err := os.Rename(fs.path, old); err != nil {
		return fmt.Errorf("rotate %s: %w", fs.path, err)
	}
	f, err := os.OpenFile(fs.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("rotate %s: %w", fs.path, err)
	}
	fs.f, fs.size = f, 0
	return syncDir(filepath.Dir(fs.path))
}

func (fs *fileSink) Close() error { return fs.f.Close() }

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// tlsConfig is the client TLS of a tls sink: the receiver's certificate
// must chain to CAFile (and name ServerName, default the address's host);
// CertFile and KeyFile, if set, are the client certificate.
func tlsConfig(cfg SinkConfig) (*tls.Config, error) {
	pem, err := os.ReadFile(cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ca_file %s holds no PEM certificate", cfg.CAFile)
	}
	name := cfg.ServerName
	if name == "" {
		host, _, err := net.SplitHostPort(cfg.Address)
		if err != nil {
			return nil, fmt.Errorf("address %q: %w", cfg.Address, err)
		}
		name = strings.Trim(host, "[]")
	}
	t := &tls.Config{RootCAs: pool, ServerName: name, MinVersion: tls.VersionTLS12}
	if cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		t.Certificates = []tls.Certificate{cert}
	}
	return t, nil
}
