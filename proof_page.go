// The desktop proof page: a per-run page drawn from a random token (a grid
// of large colour blocks), the matcher that finds that grid in a
// screenshot of the browser, and Lease.WaitProofPage, which waits until a
// browser shows it.

package crabbox

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"strings"
	"time"
)

// ErrProofNotShown: a screenshot does not show the proof page's colour
// grid (a blank, white, black, error or crashed page, another run's page,
// or no browser at all).
var ErrProofNotShown = errors.New("the proof page is not shown")

// The proof page's grid: ProofGridColumns by ProofGridRows blocks of
// ProofCellSize CSS pixels, each one colour of the proof palette.
const (
	ProofGridColumns = 8
	ProofGridRows    = 4
	ProofCellSize    = 96
)

// proofTolerance is how far (per channel, 0-255) a sampled pixel may be
// from a block's colour: the palette's channel levels are 127 apart, so a
// pixel within it is near one palette colour only.
const proofTolerance = 40

// proofMinCell is the smallest block (in screen pixels) the matcher
// accepts, so text or icons in the browser's toolbar cannot form a grid.
const proofMinCell = 16

// proofPalette holds the block colours: every colour whose channels are
// 0x00, 0x80 or 0xff, except the three greys (black, grey, white), so no
// block looks like an empty, white or black page.
var proofPalette = func() []color.RGBA {
	levels := []uint8{0x00, 0x80, 0xff}
	var p []color.RGBA
	for _, r := range levels {
		for _, g := range levels {
			for _, b := range levels {
				if r == g && g == b {
					continue
				}
				p = append(p, color.RGBA{r, g, b, 0xff})
			}
		}
	}
	return p
}()

// ProofPage is one run's desktop proof page. Make it with NewProofPage (a
// fresh random token); the grid's colours are derived from the token, so
// a screenshot of another run's page does not match.
type ProofPage struct {
	// Token is 32 lowercase hex digits (16 random bytes).
	Token string `json:"token"`
}

// NewProofPage returns a page with a fresh token from crypto/rand.
func NewProofPage() (ProofPage, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return ProofPage{}, fmt.Errorf("crabbox: proof token: %w", err)
	}
	return ProofPage{Token: hex.EncodeToString(b[:])}, nil
}

// ProofPageFor returns the page of a known token (32 lowercase hex
// digits), e.g. to check a kept screenshot later. A malformed token is an
// error matching ErrInvalidArgument.
func ProofPageFor(token string) (ProofPage, error) {
	if len(token) != 32 || strings.ToLower(token) != token {
		return ProofPage{}, fmt.Errorf("%w: proof token %q is not 32 lowercase hex digits", ErrInvalidArgument, token)
	}
	if _, err := hex.DecodeString(token); err != nil {
		return ProofPage{}, fmt.Errorf("%w: proof token %q is not 32 lowercase hex digits", ErrInvalidArgument, token)
	}
	return ProofPage{Token: token}, nil
}

// Title is the page's title (the browser window shows it).
func (p ProofPage) Title() string {
	short := p.Token
	if len(short) > 8 {
		short = short[:8]
	}
	return "Crabbox desktop proof " + short
}

// Colors returns the grid's block colours, row by row. Neighbouring
// blocks (left and above) always differ, so every block edge is visible.
func (p ProofPage) Colors() []color.RGBA {
	sum := sha256.Sum256([]byte("crabbox desktop proof\x00" + p.Token))
	n := len(proofPalette)
	idx := make([]int, ProofGridColumns*ProofGridRows)
	out := make([]color.RGBA, len(idx))
	for i := range idx {
		k := int(sum[i%len(sum)]) % n
		for (i%ProofGridColumns > 0 && k == idx[i-1]) || (i >= ProofGridColumns && k == idx[i-ProofGridColumns]) {
			k = (k + 1) % n
		}
		idx[i] = k
		out[i] = proofPalette[k]
	}
	return out
}

// HTML is the page: the grid at the top left of the viewport, the token
// as text below it.
func (p ProofPage) HTML() string {
	var b strings.Builder
	fmt.Fprintf(&b, "<!doctype html><html><head><meta charset=\"utf-8\"><title>%s</title></head>", p.Title())
	fmt.Fprintf(&b, "<body style=\"margin:0;padding:24px;background:#f4f1ea;font:24px monospace;color:#222\">")
	fmt.Fprintf(&b, "<div style=\"display:grid;grid-template-columns:repeat(%d,%dpx);grid-auto-rows:%dpx\">",
		ProofGridColumns, ProofCellSize, ProofCellSize)
	for _, c := range p.Colors() {
		fmt.Fprintf(&b, "<div style=\"background:#%02x%02x%02x\"></div>", c.R, c.G, c.B)
	}
	fmt.Fprintf(&b, "</div><p>crabbox desktop proof token %s</p></body></html>", p.Token)
	return b.String()
}

// URL is the page as a self-contained data: URL (no network needed).
func (p ProofPage) URL() string {
	return "data:text/html;base64," + base64.StdEncoding.EncodeToString([]byte(p.HTML()))
}

// ProofMatch is where a screenshot shows the proof grid, in screen pixels.
type ProofMatch struct {
	X          int     `json:"x"`
	Y          int     `json:"y"`
	CellWidth  float64 `json:"cell_width"`
	CellHeight float64 `json:"cell_height"`
}

func (m ProofMatch) String() string {
	return fmt.Sprintf("proof grid at %d,%d with %.1fx%.1f px blocks", m.X, m.Y, m.CellWidth, m.CellHeight)
}

// Match decodes a PNG screenshot and searches it for the page's grid: the
// grid may be anywhere (the viewport sits below the browser's toolbar at an
// unknown offset) and scaled; block edges may be blended, so each block is
// judged by pixels around its centre. It passes only when every block has
// its expected colour. Not finding the grid is an error matching
// ErrProofNotShown; data that is not a PNG matches ErrInvalidArgument.
func (p ProofPage) Match(png []byte) (ProofMatch, error) {
	if _, err := ProofPageFor(p.Token); err != nil {
		return ProofMatch{}, err
	}
	img, _, err := decodeScreenshot(png)
	if err != nil {
		return ProofMatch{}, err
	}
	return matchGrid(toRGBA(img), p.Colors(), ProofGridColumns, ProofGridRows)
}

func toRGBA(img image.Image) *image.RGBA {
	if m, ok := img.(*image.RGBA); ok && m.Bounds().Min == (image.Point{}) {
		return m
	}
	b := img.Bounds()
	m := image.NewRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	draw.Draw(m, m.Bounds(), img, b.Min, draw.Src)
	return m
}

// gridMatcher searches an image for a grid of known block colours.
type gridMatcher struct {
	img        *image.RGBA
	w, h       int
	want       []color.RGBA
	cols, rows int
	best       int // most blocks any candidate matched
}

func (g *gridMatcher) near(x, y int, c color.RGBA) bool {
	if x < 0 || y < 0 || x >= g.w || y >= g.h {
		return false
	}
	i := g.img.PixOffset(x, y)
	px := g.img.Pix[i : i+3 : i+3]
	d := func(a, b uint8) bool { return int(a)-int(b) <= proofTolerance && int(b)-int(a) <= proofTolerance }
	return d(px[0], c.R) && d(px[1], c.G) && d(px[2], c.B)
}

// proofMaxGap is the widest blended edge (pixels matching neither block)
// between two neighbouring blocks.
const proofMaxGap = 4

// walk follows runs of the colours seq from (x, y) in direction (dx, dy),
// starting on a pixel of seq[0]: each run must follow the previous one
// after at most proofMaxGap blended pixels, and the runs must have about
// the same length. It returns the position of the first run's first pixel
// along the walk, and the mean run length.
func (g *gridMatcher) walk(x, y, dx, dy int, seq []color.RGBA) (start int, cell float64, ok bool) {
	pos := func() int { return x*dx + y*dy }
	start = pos()
	lens := make([]int, len(seq))
	var end int
	for i, c := range seq {
		if i > 0 {
			gap := 0
			for !g.near(x, y, c) {
				if gap++; gap > proofMaxGap {
					return 0, 0, false
				}
				x, y = x+dx, y+dy
			}
		}
		s := pos()
		for g.near(x, y, c) {
			x, y = x+dx, y+dy
		}
		end = pos()
		lens[i] = end - s
	}
	cell = float64(end-start) / float64(len(seq))
	if cell < proofMinCell {
		return 0, 0, false
	}
	for _, l := range lens {
		if float64(l) < 0.6*cell || float64(l) > 1.4*cell {
			return 0, 0, false
		}
	}
	return start, cell, true
}

// try checks the candidate whose first row is crossed by scan line y with
// the first block's run starting at x.
func (g *gridMatcher) try(x, y int) (ProofMatch, bool) {
	x0, cw, ok := g.walk(x, y, 1, 0, g.want[:g.cols])
	if !ok {
		return ProofMatch{}, false
	}
	cx := x0 + int(cw/2)
	if !g.near(cx, y, g.want[0]) {
		return ProofMatch{}, false
	}
	top := y
	for g.near(cx, top-1, g.want[0]) {
		top--
	}
	column := make([]color.RGBA, g.rows)
	for r := range column {
		column[r] = g.want[r*g.cols]
	}
	y0, ch, ok := g.walk(cx, top, 0, 1, column)
	if !ok || cw > 2*ch || ch > 2*cw {
		return ProofMatch{}, false
	}
	matched := 0
	for r := 0; r < g.rows; r++ {
		for c := 0; c < g.cols; c++ {
			fx, fy := float64(x0)+(float64(c)+0.5)*cw, float64(y0)+(float64(r)+0.5)*ch
			want := g.want[r*g.cols+c]
			for _, o := range [][2]float64{{0, 0}, {-0.3, -0.3}, {0.3, -0.3}, {-0.3, 0.3}, {0.3, 0.3}} {
				if !g.near(int(fx+o[0]*cw), int(fy+o[1]*ch), want) {
					g.best = max(g.best, matched)
					return ProofMatch{}, false
				}
			}
			matched++
		}
	}
	return ProofMatch{X: x0, Y: y0, CellWidth: cw, CellHeight: ch}, true
}

// proofMaxCandidates bounds the candidates tried on one screenshot.
const proofMaxCandidates = 20000

func matchGrid(img *image.RGBA, want []color.RGBA, cols, rows int) (ProofMatch, error) {
	g := &gridMatcher{img: img, w: img.Bounds().Dx(), h: img.Bounds().Dy(), want: want, cols: cols, rows: rows}
	tried := 0
	for y := 0; y < g.h; y += proofMinCell / 4 {
		for x := 0; x < g.w; x++ {
			if !g.near(x, y, want[0]) || g.near(x-1, y, want[0]) {
				continue
			}
			if m, ok := g.try(x, y); ok {
				return m, nil
			}
			if tried++; tried >= proofMaxCandidates {
				return ProofMatch{}, fmt.Errorf("%w: no %dx%d block grid with the expected colours (gave up after %d candidates)",
					ErrProofNotShown, cols, rows, tried)
			}
		}
	}
	return ProofMatch{}, fmt.Errorf("%w: no %dx%d block grid with the expected colours in the %dx%d screenshot (%d candidates, best matched %d of %d blocks)",
		ErrProofNotShown, cols, rows, g.w, g.h, tried, g.best, cols*rows)
}

// WaitProofPage takes screenshots of the lease's display until one shows
// p's grid (ProofPage.Match), and returns that screenshot and where the
// grid is. Before every screenshot it checks that b still runs: when the
// browser exited it returns at once with an error matching
// ErrBrowserExited. It waits as long as ctx allows: give ctx a deadline;
// then the error matches ErrProofNotShown and ctx's error. The last
// screenshot is returned with every error that follows one.
func (l *Lease) WaitProofPage(ctx context.Context, b *Browser, p ProofPage) (ProofMatch, []byte, error) {
	if err := l.usable("wait-proof-page"); err != nil {
		return ProofMatch{}, nil, err
	}
	if b == nil {
		return ProofMatch{}, nil, l.c.opErr("wait-proof-page", l.ID, fmt.Errorf("%w: nil browser", ErrInvalidArgument))
	}
	t := leaseTarget{l}
	m, data, err := waitProof(ctx, p, func() ([]byte, error) {
		if err := b.Alive(ctx); err != nil {
			return nil, err
		}
		return t.screenshot(ctx)
	})
	if err != nil {
		return m, data, l.c.opErr("wait-proof-page", l.ID, err)
	}
	return m, data, nil
}

// proofPoll is the pause between two screenshots while waiting for the
// proof page.
const proofPoll = 250 * time.Millisecond

// waitProof matches screenshots from shoot against p until one shows the
// grid, shoot fails, or ctx ends.
func waitProof(ctx context.Context, p ProofPage, shoot func() ([]byte, error)) (ProofMatch, []byte, error) {
	if _, err := ProofPageFor(p.Token); err != nil {
		return ProofMatch{}, nil, err
	}
	var last []byte
	var lastErr error
	for {
		data, err := shoot()
		if err != nil {
			if lastErr != nil && ctx.Err() != nil {
				err = errors.Join(lastErr, err)
			}
			return ProofMatch{}, last, err
		}
		last = data
		m, err := p.Match(data)
		if err == nil {
			return m, data, nil
		}
		if !errors.Is(err, ErrProofNotShown) {
			return ProofMatch{}, last, err
		}
		lastErr = err
		if serr := sleep(ctx, proofPoll); serr != nil {
			return ProofMatch{}, last, fmt.Errorf("%w (%w)", lastErr, serr)
		}
	}
}
