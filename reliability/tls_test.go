package reliability

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/swapbridge/swapbridge/internal/testwait"
	"github.com/swapbridge/swapbridge/stationagent"
	"github.com/swapbridge/swapbridge/stationagent/driver/sim"
)

// selfSigned writes a fresh certificate for 127.0.0.1 and localhost and its
// key into dir and returns the paths.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "swapd test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return certFile, keyFile
}

// logField finds the first JSON log line with msg and returns its key.
func logField(log, msg, key string) string {
	for _, l := range strings.Split(log, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == msg {
			if v, ok := m[key].(string); ok {
				return v
			}
		}
	}
	return ""
}

// TestTLSListenerEndToEnd configures swapd's MQTT TLS listener from its
// environment with a certificate made here, and runs a real agent over
// ssl:// against it. A client that does not trust the certificate, and a
// plain-TCP client on the TLS port, are refused.
func TestTLSListenerEndToEnd(t *testing.T) {
	certFile, keyFile := selfSigned(t, t.TempDir())
	p := startSwapd(t, t.TempDir(), "SWAPD_MQTT_TLS_ADDR=127.0.0.1:0", "SWAPD_MQTT_TLS_CERT="+certFile, "SWAPD_MQTT_TLS_KEY="+keyFile)
	tlsAddr := logField(p.log.String(), "mqtt broker started", "tls_addr")
	if tlsAddr == "" {
		t.Fatalf("no tls_addr in the log:\n%s", p.log.String())
	}
	secrets := provision(t, p.admin(), 4, "TLS-1")

	// A real agent over TLS, trusting the test certificate.
	a, err := stationagent.New(stationagent.Config{
		Server: "ssl://" + tlsAddr, StationID: "TLS-1", Secret: secrets["TLS-1"], DataDir: t.TempDir(),
		Driver: stationagent.DriverSim, Sim: sim.Config{Slots: 4}, ControlSocket: "off", TLS: stationagent.TLSConfig{CAFile: certFile},
		ReconnectMin: 50 * time.Millisecond, ReconnectMax: 500 * time.Millisecond,
	}, stationagent.WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	testwait.For(t, 20*time.Second, "the TLS station online with its slots", func() bool {
		v, err := p.admin().Station(context.Background(), "TLS-1")
		return err == nil && v.Online && len(v.Slots) == 4 && a.Status().LastSeqAcked >= 1
	})

	// Refusals on the TLS port.
	connect := func(tc *tls.Config, scheme, pass string) error {
		o := paho.NewClientOptions().AddBroker(scheme + "://" + tlsAddr).SetClientID("TLS-1").SetUsername("TLS-1").SetPassword(pass).
			SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(3 * time.Second).SetTLSConfig(tc)
		c := paho.NewClient(o)
		tok := c.Connect()
		tok.WaitTimeout(10 * time.Second)
		if tok.Error() == nil {
			c.Disconnect(0)
		}
		return tok.Error()
	}
	if err := connect(&tls.Config{MinVersion: tls.VersionTLS12}, "ssl", secrets["TLS-1"]); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a client not trusting the certificate: %v, want a certificate error", err)
	}
	if err := connect(nil, "tcp", secrets["TLS-1"]); err == nil {
		t.Error("plain MQTT on the TLS port connected")
	}
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(certFile)
	pool.AppendCertsFromPEM(pem)
	if err := connect(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, "ssl", "wrong"); err == nil {
		t.Error("wrong secret over TLS accepted")
	}
	if err := connect(&tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS11}, "ssl", secrets["TLS-1"]); err == nil {
		t.Error("TLS 1.1 accepted")
	}
}
