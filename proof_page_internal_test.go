// Tests of proof_page.go: the proof page's token and grid, and the matcher
// on made-up screenshots (the grid at an offset, scaled with blended
// edges, with a wrong block, from another token, and pages without it).

package crabbox

import (
	"encoding/base64"
	"errors"
	"image"
	"image/color"
	"strings"
	"testing"
)

// drawProof paints p's grid on a browser-like screen (a grey toolbar with
// some text-like strokes, a page background) with its top left at x0, y0
// and blocks of cell pixels; each pixel averages 4x4 subsamples, so block
// edges are blended like a scaled, anti-aliased rendering.
func drawProof(p ProofPage, w, h int, x0, y0, cell float64) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	cols := p.Colors()
	at := func(fx, fy float64) color.RGBA {
		if fy < 90 {
			if int(fx)%7 < 3 && int(fy)%30 > 10 && int(fy)%30 < 20 {
				return color.RGBA{0x20, 0x20, 0x20, 0xff}
			}
			return color.RGBA{0xde, 0xe1, 0xe6, 0xff}
		}
		c, r := int((fx-x0)/cell), int((fy-y0)/cell)
		if fx >= x0 && fy >= y0 && c < ProofGridColumns && r < ProofGridRows {
			return cols[r*ProofGridColumns+c]
		}
		return color.RGBA{0xf4, 0xf1, 0xea, 0xff}
	}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			var sr, sg, sb int
			for i := 0; i < 4; i++ {
				for j := 0; j < 4; j++ {
					c := at(float64(x)+(float64(i)+0.5)/4, float64(y)+(float64(j)+0.5)/4)
					sr, sg, sb = sr+int(c.R), sg+int(c.G), sb+int(c.B)
				}
			}
			img.SetRGBA(x, y, color.RGBA{uint8(sr / 16), uint8(sg / 16), uint8(sb / 16), 0xff})
		}
	}
	return img
}

func mustPage(t *testing.T) ProofPage {
	t.Helper()
	p, err := NewProofPage()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestProofPageTokenAndGrid(t *testing.T) {
	p, q := mustPage(t), mustPage(t)
	if len(p.Token) != 32 || p.Token == q.Token {
		t.Fatalf("tokens %q and %q: want 32 hex digits, different per page", p.Token, q.Token)
	}
	if _, err := ProofPageFor(p.Token); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "abc", strings.ToUpper(p.Token), strings.Repeat("g", 32)} {
		if _, err := ProofPageFor(bad); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("ProofPageFor(%q) = %v, want ErrInvalidArgument", bad, err)
		}
	}
	pc, qc := p.Colors(), q.Colors()
	if len(pc) != ProofGridColumns*ProofGridRows {
		t.Fatalf("%d colours", len(pc))
	}
	same := true
	for i, c := range pc {
		if c != qc[i] {
			same = false
		}
		if c.R == c.G && c.G == c.B {
			t.Errorf("block %d is grey %v", i, c)
		}
		if i%ProofGridColumns > 0 && pc[i-1] == c || i >= ProofGridColumns && pc[i-ProofGridColumns] == c {
			t.Errorf("block %d has the colour of a neighbour", i)
		}
	}
	if same {
		t.Error("two tokens give the same grid")
	}
	u := p.URL()
	raw, ok := strings.CutPrefix(u, "data:text/html;base64,")
	if !ok {
		t.Fatalf("URL %q is not a data: URL", u[:40])
	}
	html, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{p.Token, "<title>" + p.Title() + "</title>"} {
		if !strings.Contains(string(html), want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(string(html), "http") {
		t.Error("the page loads something from the network")
	}
	if err := checkURL(u); err != nil {
		t.Error(err)
	}
}

func TestProofPageMatch(t *testing.T) {
	p := mustPage(t)
	for _, tc := range []struct {
		name       string
		x0, y0, cs float64
	}{
		{"at the viewport's top left", 24, 111, ProofCellSize},
		{"at an odd offset", 301, 257, ProofCellSize},
		{"scaled 1.5", 36, 130, 1.5 * ProofCellSize},
		{"scaled 0.5 at a fractional offset", 17.3, 99.6, 0.5 * ProofCellSize},
		{"scaled 1.25", 10.5, 95.25, 1.25 * ProofCellSize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := p.Match(pngOf(t, drawProof(p, 1280, 800, tc.x0, tc.y0, tc.cs)))
			if err != nil {
				t.Fatal(err)
			}
			if d := float64(m.X) - tc.x0; d < -2 || d > 2 {
				t.Errorf("x %d, want %.1f", m.X, tc.x0)
			}
			if d := float64(m.Y) - tc.y0; d < -2 || d > 2 {
				t.Errorf("y %d, want %.1f", m.Y, tc.y0)
			}
			if d := m.CellWidth - tc.cs; d < -2 || d > 2 {
				t.Errorf("cell width %.1f, want %.1f", m.CellWidth, tc.cs)
			}
			if d := m.CellHeight - tc.cs; d < -2 || d > 2 {
				t.Errorf("cell height %.1f, want %.1f", m.CellHeight, tc.cs)
			}
		})
	}
}

func TestProofPageMatchFails(t *testing.T) {
	p := mustPage(t)
	good := drawProof(p, 1280, 800, 24, 111, ProofCellSize)
	notShown := func(t *testing.T, img image.Image) {
		t.Helper()
		_, err := p.Match(pngOf(t, img))
		if !errors.Is(err, ErrProofNotShown) {
			t.Fatalf("Match = %v, want ErrProofNotShown", err)
		}
	}
	t.Run("a block with a wrong colour", func(t *testing.T) {
		img := image.NewRGBA(good.Bounds())
		copy(img.Pix, good.Pix)
		// The last block of the last row gets its left neighbour's colour.
		cols := p.Colors()
		wrong := cols[len(cols)-2]
		x0, y0 := 24+(ProofGridColumns-1)*ProofCellSize, 111+(ProofGridRows-1)*ProofCellSize
		for y := y0 + 30; y < y0+66; y++ {
			for x := x0 + 30; x < x0+66; x++ {
				img.SetRGBA(x, y, wrong)
			}
		}
		notShown(t, img)
	})
	t.Run("another token's page (a stale screenshot)", func(t *testing.T) {
		notShown(t, drawProof(mustPage(t), 1280, 800, 24, 111, ProofCellSize))
	})
	t.Run("part of the grid scrolled off the screen", func(t *testing.T) {
		notShown(t, drawProof(p, 1280, 800, 24, 500, ProofCellSize))
	})
	t.Run("blocks too small", func(t *testing.T) {
		notShown(t, drawProof(p, 1280, 800, 24, 111, 8))
	})
	white, black := image.NewRGBA(image.Rect(0, 0, 1280, 800)), image.NewRGBA(image.Rect(0, 0, 1280, 800))
	for i := 0; i < len(white.Pix); i += 4 {
		white.Pix[i], white.Pix[i+1], white.Pix[i+2], white.Pix[i+3] = 0xff, 0xff, 0xff, 0xff
		black.Pix[i+3] = 0xff
	}
	t.Run("white", func(t *testing.T) { notShown(t, white) })
	t.Run("black", func(t *testing.T) { notShown(t, black) })
	t.Run("noise", func(t *testing.T) { notShown(t, noise(1280, 800)) })
	t.Run("text", func(t *testing.T) { notShown(t, gradientWithText(1280, 800)) })
	t.Run("not a PNG", func(t *testing.T) {
		if _, err := p.Match([]byte("GIF89a")); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("Match = %v, want ErrInvalidArgument", err)
		}
	})
	t.Run("a zero page", func(t *testing.T) {
		if _, err := (ProofPage{}).Match(pngOf(t, good)); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("Match = %v, want ErrInvalidArgument", err)
		}
	})
}
