// The screen: Lease.Screenshot captures the lease's display, JudgeScreenshot
// tells a blank screenshot from a drawn one.

package crabbox

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"image"
	"image/png"
	"strings"
)

// BlankVarianceThreshold is the pixel variance (mean of the red, green and
// blue channel variances, on the 0-255 scale) below which a screenshot
// counts as blank even when it has more than one colour: a lone cursor or a
// few stray pixels on an empty screen stay far below it, while a browser
// window or a desktop with text is far above it.
const BlankVarianceThreshold = 1.0

// ScreenStats describes a decoded screenshot.
type ScreenStats struct {
	Width  int `json:"width"`
	Height int `json:"height"`
	// Colors is the number of distinct RGB colours (alpha ignored; pixels
	// are taken premultiplied, i.e. composited over black).
	Colors int `json:"colors"`
	// Variance is the mean of the per-channel (R, G, B) pixel variances on
	// the 0-255 scale.
	Variance float64 `json:"variance"`
}

// Blank reports whether the screenshot shows nothing: a single colour, or a
// variance below BlankVarianceThreshold.
func (s ScreenStats) Blank() bool {
	return s.Colors < 2 || s.Variance < BlankVarianceThreshold
}

// String summarizes the stats for reports.
func (s ScreenStats) String() string {
	verdict := "not blank"
	if s.Blank() {
		verdict = "blank"
	}
	return fmt.Sprintf("%dx%d, %d colours, variance %.2f: %s", s.Width, s.Height, s.Colors, s.Variance, verdict)
}

// maxScreenPixels bounds the image size JudgeScreenshot decodes (8192 by
// 8192, beyond an 8K screen), so a hostile or corrupt PNG header cannot make
// it allocate without limit.
const maxScreenPixels = 8192 * 8192

// JudgeScreenshot decodes a PNG and measures it. It never judges by file
// size: it decodes every pixel, counts distinct colours and computes the
// pixel variance; call Blank on the result. Data that is not a PNG, or an
// image with no pixels, is an error matching ErrInvalidArgument.
func JudgeScreenshot(data []byte) (ScreenStats, error) {
	img, cfg, err := decodeScreenshot(data)
	if err != nil {
		return ScreenStats{Width: cfg.Width, Height: cfg.Height}, err
	}
	return measureImage(img), nil
}

// decodeScreenshot decodes a PNG of at most maxScreenPixels pixels. Data
// that is not a PNG, or an image with no pixels, is an error matching
// ErrInvalidArgument; cfg carries the size whenever the header was read.
func decodeScreenshot(data []byte) (img image.Image, cfg image.Config, err error) {
	if len(data) == 0 {
		return nil, cfg, fmt.Errorf("%w: empty screenshot", ErrInvalidArgument)
	}
	cfg, err = png.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return nil, image.Config{}, fmt.Errorf("%w: screenshot is not a PNG: %v", ErrInvalidArgument, err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, cfg, fmt.Errorf("%w: screenshot has no pixels (%dx%d)", ErrInvalidArgument, cfg.Width, cfg.Height)
	}
	if int64(cfg.Width)*int64(cfg.Height) > maxScreenPixels {
		return nil, cfg, fmt.Errorf("%w: screenshot too large (%dx%d)", ErrInvalidArgument, cfg.Width, cfg.Height)
	}
	img, err = png.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, cfg, fmt.Errorf("%w: decoding screenshot: %v", ErrInvalidArgument, err)
	}
	return img, cfg, nil
}

// measureImage counts colours with a 2^24-bit set and accumulates
// per-channel sums for the variance.
func measureImage(img image.Image) ScreenStats {
	b := img.Bounds()
	st := ScreenStats{Width: b.Dx(), Height: b.Dy()}
	n := float64(b.Dx()) * float64(b.Dy())
	if n == 0 {
		return st
	}
	seen := make([]uint64, (1<<24)/64)
	var sum, sumSq [3]float64
	add := func(r, g, bl uint8) {
		c := uint32(r)<<16 | uint32(g)<<8 | uint32(bl)
		w, bit := c/64, uint64(1)<<(c%64)
		if seen[w]&bit == 0 {
			seen[w] |= bit
			st.Colors++
		}
		fr, fg, fb := float64(r), float64(g), float64(bl)
		sum[0] += fr
		sum[1] += fg
		sum[2] += fb
		sumSq[0] += fr * fr
		sumSq[1] += fg * fg
		sumSq[2] += fb * fb
	}
	switch m := img.(type) {
	case *image.RGBA:
		for y := b.Min.Y; y < b.Max.Y; y++ {
			row := m.Pix[m.PixOffset(b.Min.X, y):]
			for x := 0; x < b.Dx(); x++ {
				add(row[4*x], row[4*x+1], row[4*x+2])
			}
		}
	default:
		for y := b.Min.Y; y < b.Max.Y; y++ {
			for x := b.Min.X; x < b.Max.X; x++ {
				r, g, bl, _ := img.At(x, y).RGBA()
				add(uint8(r>>8), uint8(g>>8), uint8(bl>>8))
			}
		}
	}
	var v float64
	for i := 0; i < 3; i++ {
		mean := sum[i] / n
		vi := sumSq[i]/n - mean*mean
		if vi < 0 { // rounding
			vi = 0
		}
		v += vi
	}
	st.Variance = v / 3
	return st
}

// Display is the X display desktop leases run.
const Display = ":99"

//go:embed screen_screenshot.sh
var screenshotScript string

// Screenshot returns a PNG of the lease's display (:99, or the box's
// $CRABBOX_DISPLAY when it sets one, as test hosts and the embedded local
// cloud do), taken with scrot,
// falling back to ImageMagick import. A lease without a display returns an
// error matching ErrNoDisplay; one without a capture tool ErrMissingTool.
func (l *Lease) Screenshot(ctx context.Context) ([]byte, error) {
	if err := l.usable("screenshot"); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	res, err := l.Run(ctx, screenshotScript, WithStdout(&out), WithTailBytes(512))
	if err != nil {
		if res != nil {
			switch res.ExitCode {
			case exitNoDisplay:
				return nil, l.c.opErr("screenshot", l.ID, fmt.Errorf("%w: %s", ErrNoDisplay, strings.TrimSpace(res.StderrTail)))
			case exitNoTool:
				return nil, l.c.opErr("screenshot", l.ID, fmt.Errorf("%w: %s", ErrMissingTool, strings.TrimSpace(res.StderrTail)))
			}
		}
		return nil, l.c.opErr("screenshot", l.ID, err)
	}
	b := out.Bytes()
	if !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
		return nil, l.c.opErr("screenshot", l.ID, fmt.Errorf("capture tool returned %d bytes that are not a PNG", len(b)))
	}
	return b, nil
}
