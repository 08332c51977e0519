package bench

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/<pid>/stat; it is
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// ProcStat is a process's CPU time and memory as read from /proc.
type ProcStat struct {
	CPUSeconds float64 `json:"cpu_seconds"`
	RSSKB      int64   `json:"rss_kb"`
	PeakRSSKB  int64   `json:"peak_rss_kb"` // VmHWM
	// AnonKB is the anonymous part of RSS (heap and stacks), without the
	// pages of mapped files such as the bbolt database.
	AnonKB int64 `json:"rss_anon_kb"`
}

// ReadProc reads /proc/<pid>/stat and /proc/<pid>/status.
func ReadProc(pid int) (ProcStat, error) {
	var ps ProcStat
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ps, fmt.Errorf("bench: read cpu of pid %d: %w", pid, err)
	}
	// The command name (field 2) may contain spaces; fields after the last
	// ')' are fixed: state is field 3, utime 14 and stime 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return ps, fmt.Errorf("bench: /proc/%d/stat: unexpected format", pid)
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 13 {
		return ps, fmt.Errorf("bench: /proc/%d/stat: too few fields", pid)
	}
	ut, err1 := strconv.ParseUint(string(f[11]), 10, 64)
	st, err2 := strconv.ParseUint(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return ps, fmt.Errorf("bench: /proc/%d/stat: bad utime/stime", pid)
	}
	ps.CPUSeconds = float64(ut+st) / clockTicks
	b, err = os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ps, fmt.Errorf("bench: read memory of pid %d: %w", pid, err)
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		var dst *int64
		switch string(k) {
		case "VmRSS":
			dst = &ps.RSSKB
		case "VmHWM":
			dst = &ps.PeakRSSKB
		case "RssAnon":
			dst = &ps.AnonKB
		default:
			continue
		}
		fs := bytes.Fields(v)
		if len(fs) > 0 {
			n, err := strconv.ParseInt(string(fs[0]), 10, 64)
			if err == nil {
				*dst = n
			}
		}
	}
	return ps, nil
}
