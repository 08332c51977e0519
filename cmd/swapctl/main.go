// Command swapctl is the operator's CLI over swapd's admin HTTP API.
//
//	swapctl [--server URL] [--token TOKEN] [--json] COMMAND …
//
//	station add ID --slots N [--name NAME] [--lat LAT --lon LON]
//	station list
//	station show ID
//	station status ID maintenance|online
//	station rotate ID [--grace DURATION]
//	station rm ID
//	user add ID
//	user token add ID
//	user token revoke ID
//	user rm ID
//	notify USER_ID --title T --message M [--level info|warning|error]
//	watch [--station ID | --notifications] [--since N] [--token USER_TOKEN]
//
// The server URL comes from --server, else SWAPCTL_SERVER, else
// http://localhost:8000; the admin token from --token, else SWAPCTL_TOKEN,
// else the file named by --token-file (default ./data/admin.token).
//
// Text from the server is printed with its control characters escaped, so
// a station name or battery id cannot drive the operator's terminal.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/swapbridge/swapbridge/client"
	"github.com/swapbridge/swapbridge/wire"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "swapctl:", esc(err.Error()))
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

const usage = `usage: swapctl [--server URL] [--token TOKEN] [--json] COMMAND

commands:
  station add ID --slots N [--name NAME] [--lat LAT] [--lon LON]
  station list
  station show ID
  station status ID maintenance|online
  station rotate ID [--grace DURATION]   new secret; the old one works for DURATION (default 0s)
  station rm ID                          delete a station (its active bookings fail)
  user add ID
  user token add ID                      one more token for the user
  user token revoke ID                   revoke every token of the user
  user rm ID                             delete a user (tokens revoked, bookings cancelled)
  notify USER_ID --title TITLE --message TEXT [--level info|warning|error]
  watch [--station ID | --notifications] [--since N] [--token USER_TOKEN]
                                         print WebSocket frames, one JSON per line

environment: SWAPCTL_SERVER (default http://localhost:8000), SWAPCTL_TOKEN
(default: the contents of ./data/admin.token)`

// globals are the flags every command accepts, before or after it.
type globals struct {
	server, token, tokenFile string
	json                     bool
}

func (g *globals) define(fs *flag.FlagSet) {
	fs.StringVar(&g.server, "server", g.server, "swapd base `URL` (env SWAPCTL_SERVER)")
	fs.StringVar(&g.token, "token", g.token, "admin `token` (env SWAPCTL_TOKEN)")
	fs.StringVar(&g.tokenFile, "token-file", g.tokenFile, "read the admin token from `file`")
	fs.BoolVar(&g.json, "json", g.json, "print JSON instead of tables")
}

// parse parses flags and positional arguments in any order.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	g := &globals{server: getenv("SWAPCTL_SERVER"), token: getenv("SWAPCTL_TOKEN"), tokenFile: "data/admin.token"}
	if g.server == "" {
		g.server = "http://localhost:8000"
	}
	top := flag.NewFlagSet("swapctl", flag.ContinueOnError)
	top.SetOutput(stderr)
	top.Usage = func() { fmt.Fprintln(stderr, usage) }
	g.define(top)
	if err := top.Parse(args); err != nil {
		return err
	}
	rest := top.Args()
	if len(rest) == 0 {
		fmt.Fprintln(stderr, usage)
		return fmt.Errorf("%w: a command is required", errUsage)
	}
	cmd := rest[0]
	if (cmd == "station" || cmd == "user") && len(rest) > 1 {
		cmd += " " + rest[1]
		rest = rest[2:]
		if cmd == "user token" && len(rest) > 0 {
			cmd += " " + rest[0]
			rest = rest[1:]
		}
	} else {
		rest = rest[1:]
	}
	fs := flag.NewFlagSet("swapctl "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	g.define(fs)
	c := &cli{g: g, out: stdout}
	switch cmd {
	case "station add":
		name := fs.String("name", "", "display name (default: the id)")
		slots := fs.Int("slots", 0, "number of slots (required)")
		lat := fs.Float64("lat", 0, "latitude")
		lon := fs.Float64("lon", 0, "longitude")
		pos, err := parse(fs, rest)
		if err != nil {
			return err
		}
		if len(pos) != 1 || *slots == 0 {
			return fmt.Errorf("%w: station add ID --slots N [--name NAME] [--lat LAT] [--lon LON]", errUsage)
		}
		return c.stationAdd(ctx, wire.CreateStationRequest{ID: pos[0], Name: *name, Slots: *slots, Lat: *lat, Lon: *lon})
	case "station list":
		if _, err := parse(fs, rest); err != nil {
			return err
		}
		return c.stationList(ctx)
	case "station show":
		pos, err := parse(fs, rest)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return fmt.Errorf("%w: station show ID", errUsage)
		}
		return c.stationShow(ctx, pos[0])
	case "station status":
		pos, err := parse(fs, rest)
		if err != nil {
			return err
		}
		if len(pos) != 2 || (pos[1] != "maintenance" && pos[1] != "online") {
			return fmt.Errorf("%w: station status ID maintenance|online", errUsage)
		}
		return c.stationStatus(ctx, pos[0], pos[1])
	case "station rotate":
		grace := fs.String("grace", "", "how long the old secret keeps working, e.g. 1h (default 0s)")
		pos, err := parse(fs, rest)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return fmt.Errorf("%w: station rotate ID [--grace DURATION]", errUsage)
		}
		if *grace != "" {
			if d, err := time.ParseDuration(*grace); err != nil || d < 0 {
				return fmt.Errorf("%w: --grace must be a duration such as 1h or 30m, not %q", errUsage, *grace)
			}
		}
		return c.stationRotate(ctx, pos[0], *grace)
	case "station rm", "user rm", "user token add", "user token revoke":
		pos, err := parse(fs, rest)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return fmt.Errorf("%w: %s ID", errUsage, cmd)
		}
		return c.oneID(ctx, cmd, pos[0])
	case "user add":
		pos, err := parse(fs, rest)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return fmt.Errorf("%w: user add ID", errUsage)
		}
		return c.userAdd(ctx, pos[0])
	case "notify":
		title := fs.String("title", "", "title")
		msg := fs.String("message", "", "message")
		level := fs.String("level", "info", "info, warning or error")
		pos, err := parse(fs, rest)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return fmt.Errorf("%w: notify USER_ID --title T --message M", errUsage)
		}
		return c.notify(ctx, pos[0], wire.Notification{Title: *title, Message: *msg, Level: *level})
	case "watch":
		return watchCmd(ctx, fs, g, rest, stdout)
	case "help":
		fmt.Fprintln(stdout, usage)
		return nil
	}
	fmt.Fprintln(stderr, usage)
	return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
}

type cli struct {
	g   *globals
	out io.Writer
}

func (c *cli) client(admin bool) (*client.Client, error) {
	tok := c.g.token
	if tok == "" && admin && c.g.tokenFile != "" {
		b, err := os.ReadFile(c.g.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("no admin token: pass --token or set SWAPCTL_TOKEN (could not read %s: %v)", c.g.tokenFile, errors.Unwrap(err))
		}
		tok = strings.TrimSpace(string(b))
	}
	return client.New(c.g.server, tok), nil
}

func (c *cli) printJSON(v any) error {
	enc := json.NewEncoder(c.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (c *cli) table(header string, rows [][]string) error {
	tw := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		cells := make([]string, len(r))
		for i, v := range r {
			cells[i] = esc(v)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

func (c *cli) stationAdd(ctx context.Context, req wire.CreateStationRequest) error {
	cl, err := c.client(true)
	if err != nil {
		return err
	}
	res, err := cl.CreateStation(ctx, req)
	if err != nil {
		return err
	}
	if c.g.json {
		return c.printJSON(res)
	}
	fmt.Fprintf(c.out, "station %s provisioned\nsecret: %s\n(the secret is shown only once: put it in the station's stationagent.yaml)\n", esc(res.ID), esc(res.Secret))
	return nil
}

func (c *cli) stationList(ctx context.Context) error {
	cl, err := c.client(false)
	if err != nil {
		return err
	}
	sts, err := cl.Stations(ctx)
	if err != nil {
		return err
	}
	if c.g.json {
		return c.printJSON(sts)
	}
	rows := make([][]string, 0, len(sts))
	for _, s := range sts {
		rows = append(rows, []string{s.ID, s.Name, s.Status, fmt.Sprint(s.AvailableBatteries), fmt.Sprint(s.BookedBatteries),
			fmt.Sprint(s.ChargingBatteries), fmt.Sprint(s.UnavailableBatteries), fmt.Sprint(s.EmptySlots), fmt.Sprint(s.FaultedSlots), fmt.Sprint(s.TotalSlots), ago(s.LastSeen)})
	}
	return c.table("ID\tNAME\tSTATUS\tAVAIL\tBOOKED\tCHARGING\tUNAVAIL\tEMPTY\tFAULTED\tSLOTS\tLAST SEEN", rows)
}

func (c *cli) stationShow(ctx context.Context, id string) error {
	cl, err := c.client(false)
	if err != nil {
		return err
	}
	s, err := cl.Station(ctx, id)
	if err != nil {
		return err
	}
	if c.g.json {
		return c.printJSON(s)
	}
	fmt.Fprintf(c.out, "%s (%s) %s, last seen %s\navailable %d, booked %d, charging %d, unavailable %d, empty %d, faulted %d of %d slots\n\n",
		esc(s.ID), esc(s.Name), esc(s.Status), ago(s.LastSeen), s.AvailableBatteries, s.BookedBatteries, s.ChargingBatteries, s.UnavailableBatteries, s.EmptySlots, s.FaultedSlots, s.TotalSlots)
	rows := make([][]string, 0, len(s.Slots))
	for _, sl := range s.Slots {
		bat := sl.Battery()
		if bat == "" {
			bat = "-"
		}
		lock := "unlocked"
		if sl.Locked {
			lock = "locked"
		}
		res := ""
		if sl.Reserved {
			res = "reserved " + sl.BookingID
		}
		rows = append(rows, []string{strconv.Itoa(sl.Slot.Slot), bat, fmt.Sprintf("%.1f", sl.SoC), fmt.Sprintf("%.0f", sl.SoH),
			fmt.Sprintf("%.1f", sl.TempC), sl.Door + "/" + lock, sl.Fault, res})
	}
	return c.table("SLOT\tBATTERY\tSOC\tSOH\tTEMP\tDOOR\tFAULT\tBOOKING", rows)
}

func (c *cli) stationStatus(ctx context.Context, id, status string) error {
	cl, err := c.client(true)
	if err != nil {
		return err
	}
	s, err := cl.SetStationStatus(ctx, id, status)
	if err != nil {
		return err
	}
	if c.g.json {
		return c.printJSON(s)
	}
	fmt.Fprintf(c.out, "station %s is now %s\n", esc(s.ID), esc(s.Status))
	return nil
}

func (c *cli) userAdd(ctx context.Context, id string) error {
	cl, err := c.client(true)
	if err != nil {
		return err
	}
	res, err := cl.CreateUser(ctx, id)
	if err != nil {
		return err
	}
	if c.g.json {
		return c.printJSON(res)
	}
	fmt.Fprintf(c.out, "user %s created\ntoken: %s\n(the token is shown only once)\n", esc(res.ID), esc(res.Token))
	return nil
}

func (c *cli) notify(ctx context.Context, uid string, n wire.Notification) error {
	cl, err := c.client(true)
	if err != nil {
		return err
	}
	if err := cl.Notify(ctx, uid, n); err != nil {
		return err
	}
	if c.g.json {
		return c.printJSON(map[string]string{"status": "sent"})
	}
	fmt.Fprintf(c.out, "notification sent to %s\n", esc(uid))
	return nil
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := time.Since(t).Round(time.Second)
	if d < 0 {
		d = 0
	}
	return d.String() + " ago"
}

func (c *cli) stationRotate(ctx context.Context, id, grace string) error {
	cl, err := c.client(true)
	if err != nil {
		return err
	}
	res, err := cl.RotateStationSecret(ctx, id, grace)
	if err != nil {
		return err
	}
	if c.g.json {
		return c.printJSON(res)
	}
	old := "the old secret is refused from now on, and a session logged in with it is closed"
	if grace != "" {
		if d, _ := time.ParseDuration(grace); d > 0 {
			old = "the old secret keeps working for " + d.String()
		}
	}
	fmt.Fprintf(c.out, "station %s has a new secret\nsecret: %s\n(the secret is shown only once: put it in the station's stationagent.yaml; %s)\n", esc(res.ID), esc(res.Secret), old)
	return nil
}

// oneID runs the commands that take one id: station rm, user rm, user token
// add, user token revoke.
func (c *cli) oneID(ctx context.Context, cmd, id string) error {
	cl, err := c.client(true)
	if err != nil {
		return err
	}
	var done string
	switch cmd {
	case "station rm":
		err, done = cl.DeleteStation(ctx, id), "station "+id+" deleted"
	case "user rm":
		err, done = cl.DeleteUser(ctx, id), "user "+id+" deleted"
	case "user token revoke":
		err, done = cl.RevokeUserTokens(ctx, id), "every token of user "+id+" revoked"
	case "user token add":
		res, err := cl.AddUserToken(ctx, id)
		if err != nil {
			return err
		}
		if c.g.json {
			return c.printJSON(res)
		}
		fmt.Fprintf(c.out, "user %s has a new token (%s)\ntoken: %s\n(the token is shown only once)\n", esc(res.UserID), esc(res.ID), esc(res.Token))
		return nil
	}
	if err != nil {
		return err
	}
	if c.g.json {
		return c.printJSON(map[string]string{"status": "ok"})
	}
	fmt.Fprintln(c.out, esc(done))
	return nil
}

// esc returns s as it is when every rune is printable, else quoted with
// strconv.Quote's escapes (\x1b, \a, \t, \u0085…), so text from the server
// cannot move the cursor, retitle or clear the terminal, or shift a table's
// columns.
func esc(s string) string {
	if !utf8.ValidString(s) {
		return strconv.Quote(s)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}
