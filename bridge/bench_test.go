package bridge

import (
	"context"
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/swapbridge/swapbridge/store"
	"github.com/swapbridge/swapbridge/wire"
)

// BenchmarkIngest measures the publish path (decode → apply → commit with
// fsync) with 100 stations publishing concurrently, each a 12-slot full
// telemetry whose charging battery changes soc every message: each station
// one message at a time (fsync, nosync), or with up to 32 in flight, as the
// broker pipelines a connection (pipelined).
func BenchmarkIngest(b *testing.B) {
	for _, nosync := range []bool{false, true} {
		name := "fsync"
		if nosync {
			name = "nosync"
		}
		b.Run(name, func(b *testing.B) { benchIngest(b, 100, 12, nosync, 1) })
	}
	b.Run("pipelined", func(b *testing.B) { benchIngest(b, 100, 12, false, 32) })
}

func benchIngest(b *testing.B, stations, slots int, nosync bool, window int) {
	st, err := store.Open(filepath.Join(b.TempDir(), "swapd.db"), store.Options{NoSync: nosync})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	br, err := New(Config{TickInterval: time.Hour}, st, newSink())
	if err != nil {
		b.Fatal(err)
	}
	if err := br.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	ids := make([]string, stations)
	for i := range ids {
		ids[i] = fmt.Sprintf("S%03d", i)
		info := store.Station{ID: ids[i], Slots: slots, SecretHash: sha256.Sum256([]byte("x"))}
		if err := st.CreateStation(context.Background(), info); err != nil {
			b.Fatal(err)
		}
	}
	// The slot part of every message; slot 1's soc varies.
	var tail []byte
	for i := 2; i <= slots; i++ {
		tail = fmt.Appendf(tail, `,{"slot":%d,"battery_id":"B%d","soc":95,"soh":97,"temp_c":31.2,"voltage_v":52.1,"charging":false,"door":"closed","locked":true,"fault":""}`, i, i)
	}
	tail = append(tail, "]}"...)
	msg := func(dst []byte, seq uint64) []byte {
		dst = append(dst[:0], `{"boot_id":"boot-1","seq":`...)
		dst = strconv.AppendUint(dst, seq, 10)
		dst = append(dst, `,"ts":"2026-11-26T10:00:00Z","full":true,"slots":[{"slot":1,"battery_id":"B1","soc":`...)
		dst = strconv.AppendFloat(dst, float64(seq%60)+20, 'f', 1, 64)
		dst = append(dst, `,"soh":97,"temp_c":31.2,"voltage_v":52.1,"charging":true,"door":"closed","locked":true,"fault":""}`...)
		return append(dst, tail...)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for _, sid := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			inflight := make(chan struct{}, window)
			done := func(err error) {
				if err != nil {
					failed.Store(&err)
				}
				<-inflight
			}
			for seq := uint64(1); next.Add(1) <= int64(b.N); seq++ {
				buf = msg(buf, seq)
				inflight <- struct{}{}
				if err := br.HandlePublish(sid, wire.KindTelemetry, buf, done); err != nil {
					failed.Store(&err)
					return
				}
			}
			for range window {
				inflight <- struct{}{}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if p := failed.Load(); p != nil {
		b.Fatal(*p)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
}
