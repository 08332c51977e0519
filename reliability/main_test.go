package reliability

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/swapbridge/swapbridge/client"
	"github.com/swapbridge/swapbridge/internal/swapdtest"
	"github.com/swapbridge/swapbridge/internal/testlog"
	"github.com/swapbridge/swapbridge/internal/testwait"
	"github.com/swapbridge/swapbridge/wire"
)

// binDir holds the binaries built once by TestMain.
var binDir string

// testAdminToken is the admin token of every swapd these tests start,
// in process or as a child.
const testAdminToken = swapdtest.AdminToken

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHelper())
	}
	dir, err := os.MkdirTemp("", "swapbridge-reliability-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "swapd"), "github.com/swapbridge/swapbridge/cmd/swapd")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build swapd: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// logBuf is a goroutine-safe capture of a process's output.
type logBuf = testlog.Buffer

// swapdProc is a swapd running as a child process.
type swapdProc struct {
	cmd      *exec.Cmd
	dataDir  string
	mqtt     string // host:port
	http     string // http://host:port
	log      *logBuf
	exited   chan struct{}
	waitErr  error
	killOnce sync.Once
}

// startSwapd runs the built swapd on free loopback ports with dataDir and
// the extra environment, and waits until it logged its addresses and
// answers /readyz.
func startSwapd(t *testing.T, dataDir string, env ...string) *swapdProc {
	t.Helper()
	return startSwapdArgs(t, dataDir, nil, env...)
}

func startSwapdArgs(t *testing.T, dataDir string, args []string, env ...string) *swapdProc {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "swapd"), args...)
	cmd.Env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"SWAPD_DATA_DIR=" + dataDir,
		"SWAPD_MQTT_ADDR=127.0.0.1:0",
		"SWAPD_HTTP_ADDR=127.0.0.1:0",
		"SWAPD_ADMIN_TOKEN=" + testAdminToken,
		"SWAPD_LOG_FORMAT=json",
	}, env...)
	p := &swapdProc{cmd: cmd, dataDir: dataDir, log: &logBuf{}, exited: make(chan struct{})}
	pr, pw := io.Pipe()
	cmd.Stdout = p.log
	cmd.Stderr = io.MultiWriter(p.log, pw)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start swapd: %v", err)
	}
	go func() {
		p.waitErr = cmd.Wait()
		pw.Close()
		close(p.exited)
	}()
	t.Cleanup(func() { p.kill() })

	addrs := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		sent := false
		for sc.Scan() {
			if sent {
				continue // keep draining so the child never blocks on stderr
			}
			var line struct {
				Msg  string `json:"msg"`
				MQTT string `json:"mqtt"`
				HTTP string `json:"http"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "swapd started" {
				addrs <- [2]string{line.MQTT, line.HTTP}
				sent = true
			}
		}
		io.Copy(io.Discard, pr)
	}()
	select {
	case a := <-addrs:
		p.mqtt, p.http = a[0], "http://"+a[1]
	case <-p.exited:
		t.Fatalf("swapd exited before starting: %v\n%s", p.waitErr, p.log.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("swapd did not start within 20s:\n%s", p.log.String())
	}
	testwait.For(t, 10*time.Second, "swapd ready", func() bool {
		resp, err := http.Get(p.http + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *swapdProc) kill() {
	p.killOnce.Do(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Signal(syscall.SIGKILL)
		}
		<-p.exited
	})
}

// stop sends SIGTERM and waits for a clean exit.
func (p *swapdProc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		if p.waitErr != nil {
			t.Errorf("swapd exited with %v after SIGTERM:\n%s", p.waitErr, p.log.String())
		}
	case <-time.After(15 * time.Second):
		t.Errorf("swapd did not stop within 15s of SIGTERM")
		p.kill()
	}
}

func (p *swapdProc) admin() *client.Client { return client.New(p.http, testAdminToken) }

// provision creates stations id with slots slots and returns their secrets.
func provision(t *testing.T, c *client.Client, slots int, ids ...string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := map[string]string{}
	for _, id := range ids {
		r, err := c.CreateStation(ctx, wire.CreateStationRequest{ID: id, Name: id, Slots: slots})
		if err != nil {
			t.Fatalf("provision %s: %v", id, err)
		}
		out[id] = r.Secret
	}
	return out
}
