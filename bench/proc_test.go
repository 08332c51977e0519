package bench

import (
	"os"
	"testing"
)

func TestReadProcSelf(t *testing.T) {
	ps, err := ReadProc(os.Getpid())
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	if ps.RSSKB <= 0 || ps.PeakRSSKB < ps.RSSKB {
		t.Errorf("rss %d KB, peak %d KB", ps.RSSKB, ps.PeakRSSKB)
	}
	if ps.CPUSeconds < 0 {
		t.Errorf("cpu %v", ps.CPUSeconds)
	}
	if _, err := ReadProc(-1); err == nil {
		t.Error("a missing pid must be an error")
	}
}
