package crabbox

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/png"
	"math/rand/v2"
	"testing"
)

func pngOf(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func solid(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < len(img.Pix); i += 4 {
		img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = 0x22, 0x44, 0x66, 0xff
	}
	return img
}

func noise(w, h int) *image.RGBA {
	r := rand.New(rand.NewPCG(1, 2))
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < len(img.Pix); i += 4 {
		img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = uint8(r.IntN(256)), uint8(r.IntN(256)), uint8(r.IntN(256)), 0xff
	}
	return img
}

// gradientWithText draws a vertical gradient and a block of "text" strokes,
// like a window title bar over a page.
func gradientWithText(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			v := uint8(200 + 40*y/h)
			img.Set(x, y, color.RGBA{v, v, 255, 255})
		}
	}
	for line := 0; line < 5; line++ {
		for x := 20; x < w-20; x++ {
			if (x/3)%4 == 3 {
				continue // gaps between letters
			}
			for y := 30 + 20*line; y < 38+20*line; y++ {
				img.Set(x, y, color.RGBA{10, 10, 10, 255})
			}
		}
	}
	return img
}

func TestJudgeScreenshot(t *testing.T) {
	cases := []struct {
		name   string
		img    image.Image
		blank  bool
		colors int
	}{
		{"solid colour", solid(1280, 800), true, 1},
		{"noise", noise(640, 400), false, -1},
		{"gradient with text", gradientWithText(1280, 800), false, -1},
		{"lone cursor pixel", func() image.Image {
			img := solid(1280, 800)
			img.Set(5, 5, color.White)
			return img
		}(), true, 2},
		{"black paletted", image.NewPaletted(image.Rect(0, 0, 100, 100), color.Palette{color.Black, color.White}), true, 1},
		{"gray half and half", func() image.Image {
			img := image.NewGray(image.Rect(0, 0, 100, 100))
			for y := 50; y < 100; y++ {
				for x := 0; x < 100; x++ {
					img.SetGray(x, y, color.Gray{Y: 255})
				}
			}
			return img
		}(), false, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, err := JudgeScreenshot(pngOf(t, tc.img))
			if err != nil {
				t.Fatal(err)
			}
			b := tc.img.Bounds()
			if st.Width != b.Dx() || st.Height != b.Dy() {
				t.Fatalf("size %dx%d", st.Width, st.Height)
			}
			if st.Blank() != tc.blank {
				t.Fatalf("blank=%v want %v (%s)", st.Blank(), tc.blank, st)
			}
			if tc.colors >= 0 && st.Colors != tc.colors {
				t.Fatalf("colors %d want %d", st.Colors, tc.colors)
			}
		})
	}
	st, _ := JudgeScreenshot(pngOf(t, noise(256, 256)))
	if st.Colors < 60000 || st.Variance < 4000 {
		t.Fatalf("noise stats %s", st)
	}
	st, _ = JudgeScreenshot(pngOf(t, solid(10, 10)))
	if st.Variance != 0 {
		t.Fatalf("solid variance %v", st.Variance)
	}
}

func TestJudgeScreenshotBadInput(t *testing.T) {
	good := pngOf(t, noise(50, 50))
	for name, data := range map[string][]byte{
		"empty":     nil,
		"text":      []byte("hello"),
		"truncated": good[:len(good)/2],
		"jpeg-ish":  {0xff, 0xd8, 0xff, 0xe0},
	} {
		if _, err := JudgeScreenshot(data); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	// A header claiming a gigantic image is refused before decoding.
	huge := pngOf(t, solid(1, 1))
	// IHDR width at offset 16 (8 signature + 4 length + 4 type).
	copy(huge[16:24], []byte{0, 1, 0, 0, 0, 1, 0, 0})
	if _, err := JudgeScreenshot(huge); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("huge: %v", err)
	}
}

// FuzzJudgeScreenshot: no input panics, and every accepted PNG has pixels
// and consistent stats.
func FuzzJudgeScreenshot(f *testing.F) {
	f.Add(pngOf(f, solid(4, 4)))
	f.Add(pngOf(f, noise(8, 3)))
	f.Add(pngOf(f, image.NewPaletted(image.Rect(0, 0, 3, 3), color.Palette{color.Black, color.White})))
	f.Add(pngOf(f, image.NewGray16(image.Rect(0, 0, 2, 5))))
	f.Add([]byte("\x89PNG\r\n\x1a\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := JudgeScreenshot(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("error %v does not match ErrInvalidArgument", err)
			}
			return
		}
		if st.Width <= 0 || st.Height <= 0 || st.Colors < 1 || st.Colors > st.Width*st.Height || st.Variance < 0 {
			t.Fatalf("stats %+v", st)
		}
	})
}

func BenchmarkJudgeScreenshot(b *testing.B) {
	data := pngOf(b, gradientWithText(1280, 800))
	b.ResetTimer()
	for range b.N {
		if _, err := JudgeScreenshot(data); err != nil {
			b.Fatal(err)
		}
	}
}
