package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
)

// RunDemo runs swapd with simulated stations and a demo user.
func RunDemo(ctx context.Context, cfg Config, log *slog.Logger, stdout io.Writer) error {
	return errors.New("--demo is not available yet")
}
