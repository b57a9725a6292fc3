// Tests of screen.go: JudgeScreenshot on made-up images and on real
// screens (Xvfb and scrot).

package crabbox

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"image"
	"image/color"
	"image/png"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
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

// needTool skips outside CI when a program is missing, and fails in CI.
func needTool(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is required in CI: %v", n, err)
			}
			t.Skipf("%s not installed: %v", n, err)
		}
	}
}

// startXvfb starts a real Xvfb on a free display and returns ":N".
func startXvfb(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, "Xvfb", "-displayfd", "3", "-screen", "0", "800x600x24", "-nolisten", "tcp")
	cmd.ExtraFiles = []*os.File{w}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	line, err := bufio.NewReader(r).ReadString('\n')
	r.Close()
	if err != nil {
		t.Fatalf("Xvfb did not report its display: %v", err)
	}
	return ":" + strings.TrimSpace(line)
}

func scrot(t *testing.T, display string) []byte {
	t.Helper()
	cmd := exec.Command("scrot", "-o", "-")
	cmd.Env = append(os.Environ(), "DISPLAY="+display)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scrot: %v", err)
	}
	return out
}

// TestJudgeRealScreens judges real screenshots: an empty Xvfb screen is
// blank, the same screen with a Chromium window is not.
func TestJudgeRealScreens(t *testing.T) {
	needTool(t, "Xvfb", "scrot")
	display := startXvfb(t)
	st, err := JudgeScreenshot(scrot(t, display))
	if err != nil {
		t.Fatal(err)
	}
	if !st.Blank() || st.Width != 800 || st.Height != 600 {
		t.Fatalf("empty Xvfb screen: %s", st)
	}

	needTool(t, "chromium")
	home := t.TempDir()
	page := "data:text/html,<body style='background:%23fff;font:32px sans-serif'><h1>crabbox smoke</h1><p style='color:%23c00'>not blank</p></body>"
	cmd := exec.Command("chromium", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+home+"/profile", "--window-size=800,600", "--window-position=0,0", page)
	cmd.Env = append(os.Environ(), "DISPLAY="+display, "HOME="+home)
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// Chromium and its helpers (zygote, renderers, crashpad) share a process
	// group: the cleanup ends all of them before TempDir removes the
	// profile they write to.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopGroup(t, cmd) })
	defer func() {
		if t.Failed() {
			t.Logf("chromium output:\n%s", out.String())
		}
	}()
	// The window appears after about a second, first as a frame of one or
	// two colours before the page is drawn; poll until the screen shows a
	// drawn browser (as BrowserWindowVisible judges it), with a bounded
	// deadline.
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err = JudgeScreenshot(scrot(t, display))
		if err != nil {
			t.Fatal(err)
		}
		if !st.Blank() && st.Colors >= MinBrowserColors {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("screen with chromium not drawn after 60 s (want at least %d colours): %s", MinBrowserColors, st)
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("chromium screen: %s", st)
}

// lockedBuffer collects a process's output while a test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// stopGroup ends the process group cmd leads: SIGTERM, then SIGKILL after
// 5 s, and returns once no process of the group is left (or after 30 s,
// failing the test).
func stopGroup(t *testing.T, cmd *exec.Cmd) {
	pgid := cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	start := time.Now()
	for killed := false; ; time.Sleep(50 * time.Millisecond) {
		select {
		case <-done:
		default:
			if time.Since(start) < 5*time.Second {
				continue
			}
		}
		if !killed && time.Since(start) >= 5*time.Second {
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			killed = true
		}
		if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
			<-done
			return
		}
		if time.Since(start) > 30*time.Second {
			t.Errorf("process group %d still alive after 30 s", pgid)
			return
		}
	}
}
