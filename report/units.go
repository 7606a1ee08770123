package report

import (
	"fmt"
	"strconv"
	"time"

	"github.com/coldtrace/coldtrace/internal/units"
)

// fmtDur writes a duration with three significant digits in µs, ms or s; cold starts span
// microsecond ioctls to minute-long pulls.
func fmtDur(d time.Duration) string {
	switch a := d.Abs(); {
	case a == 0:
		return "0"
	case a < time.Microsecond:
		return fmt.Sprintf("%d ns", d.Nanoseconds())
	case a < time.Millisecond:
		return sig3(float64(d)/float64(time.Microsecond), "µs")
	case a < time.Second:
		return sig3(float64(d)/float64(time.Millisecond), "ms")
	}
	return sig3(d.Seconds(), "s")
}

// sig3 writes v with about three significant digits and a unit: "1.23 s", "12.3 s", "123 s".
func sig3(v float64, unit string) string {
	switch a := max(v, -v); {
	case a < 10:
		return fmt.Sprintf("%.2f %s", v, unit)
	case a < 100:
		return fmt.Sprintf("%.1f %s", v, unit)
	}
	return fmt.Sprintf("%.0f %s", v, unit)
}

// fmtRate writes bytes moved over a duration as a rate, or "-" when there is no time.
func fmtRate(n int64, d time.Duration) string {
	if n <= 0 || d <= 0 {
		return "-"
	}
	return units.Bytes(int64(float64(n)/d.Seconds())) + "/s"
}

// fmtShare writes tenths of a percent: 423 is "42.3%".
func fmtShare(tenths int) string {
	return fmt.Sprintf("%d.%d%%", tenths/10, tenths%10)
}

// fmtTick writes an axis tick without trailing zeros in the unit of the axis extent:
// "0", "250 ms", "1.5 s".
func fmtTick(d, extent time.Duration) string {
	unit, name := time.Second, "s"
	switch {
	case d == 0:
		return "0"
	case extent < time.Millisecond:
		unit, name = time.Microsecond, "µs"
	case extent < time.Second:
		unit, name = time.Millisecond, "ms"
	}
	return strconv.FormatFloat(float64(d)/float64(unit), 'f', -1, 64) + " " + name
}
