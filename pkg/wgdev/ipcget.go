package wgdev

import (
	"encoding/hex"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// parseIpcGet reads an in-process device's state through the UAPI "get"
// text, the same data wgctrl reads over the socket.
func parseIpcGet(dev *device.Device) (*wgtypes.Device, error) {
	text, err := dev.IpcGet()
	if err != nil {
		return nil, err
	}
	return ParseUAPIGet(text)
}

// ParseUAPIGet parses the UAPI "get" response format.
func ParseUAPIGet(text string) (*wgtypes.Device, error) {
	d := &wgtypes.Device{}
	var p *wgtypes.Peer
	var hsSec, hsNsec int64
	flush := func() {
		if p != nil {
			if hsSec != 0 || hsNsec != 0 {
				p.LastHandshakeTime = time.Unix(hsSec, hsNsec)
			}
			d.Peers = append(d.Peers, *p)
		}
		hsSec, hsNsec = 0, 0
	}
	for line := range strings.SplitSeq(text, "\n") {
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("uapi: malformed line %q", line)
		}
		switch k {
		case "public_key":
			flush()
			key, err := hexKey(v)
			if err != nil {
				return nil, err
			}
			p = &wgtypes.Peer{PublicKey: key}
		case "private_key":
			key, err := hexKey(v)
			if err != nil {
				return nil, err
			}
			d.PrivateKey = key
			d.PublicKey = key.PublicKey()
		case "listen_port":
			d.ListenPort, _ = strconv.Atoi(v)
		case "endpoint":
			if p != nil {
				if ua, err := net.ResolveUDPAddr("udp", v); err == nil {
					p.Endpoint = ua
				}
			}
		case "allowed_ip":
			if p != nil {
				if _, n, err := net.ParseCIDR(v); err == nil {
					p.AllowedIPs = append(p.AllowedIPs, *n)
				}
			}
		case "last_handshake_time_sec":
			hsSec, _ = strconv.ParseInt(v, 10, 64)
		case "last_handshake_time_nsec":
			hsNsec, _ = strconv.ParseInt(v, 10, 64)
		case "rx_bytes":
			if p != nil {
				p.ReceiveBytes, _ = strconv.ParseInt(v, 10, 64)
			}
		case "tx_bytes":
			if p != nil {
				p.TransmitBytes, _ = strconv.ParseInt(v, 10, 64)
			}
		case "persistent_keepalive_interval":
			if p != nil {
				s, _ := strconv.Atoi(v)
				p.PersistentKeepaliveInterval = time.Duration(s) * time.Second
			}
		}
	}
	flush()
	return d, nil
}

func hexKey(s string) (wgtypes.Key, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != wgtypes.KeyLen {
		return wgtypes.Key{}, fmt.Errorf("uapi: bad key %q", s)
	}
	return wgtypes.Key(b), nil
}
