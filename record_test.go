// Tests of record.go on a real desktop test host: Record in both formats,
// to memory and to a local path, the recording check, a cancelled Record.

package crabbox_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	crabbox "github.com/crabbox/crabbox-go"
)

func ffprobe(t *testing.T, path string) (frames int, duration float64, width int) {
	t.Helper()
	out, err := exec.Command("ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
		"-show_entries", "stream=nb_read_frames,width:format=duration", "-of", "json", path).Output()
	require.NoError(t, err, "ffprobe %s", path)
	var v struct {
		Streams []struct {
			Frames string `json:"nb_read_frames"`
			Width  int    `json:"width"`
		} `json:"streams"`
		Format struct {
			Duration string `json:"duration"`
		} `json:"format"`
	}
	require.NoError(t, json.Unmarshal(out, &v))
	require.Len(t, v.Streams, 1)
	frames, _ = strconv.Atoi(v.Streams[0].Frames)
	duration, _ = strconv.ParseFloat(v.Format.Duration, 64)
	return frames, duration, v.Streams[0].Width
}

func TestDesktopRecording(t *testing.T) {
	needDesktopTools(t, desktopTools...)
	h := startDesktopHost(t, hostOptions{})
	h.mustBootstrap(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b, err := h.l.OpenURL(ctx, h.writePage(t, "Recorded page"))
	require.NoError(t, err)
	defer b.Close(context.Background())
	_, err = h.l.WaitWindow(ctx, "chromium")
	require.NoError(t, err)

	rec, err := h.l.Record(ctx, 2*time.Second)
	require.NoError(t, err)
	require.NotEmpty(t, rec.Data)
	assert.Equal(t, int64(len(rec.Data)), rec.Size)
	assert.Equal(t, "ffprobe", rec.Video.Source)
	assert.Greater(t, rec.Video.Frames, 5)
	assert.Greater(t, rec.Video.Duration, time.Second)
	assert.Equal(t, 1280, rec.Video.Width)
	local := filepath.Join(t.TempDir(), "rec.mp4")
	require.NoError(t, os.WriteFile(local, rec.Data, 0o644))
	frames, dur, width := ffprobe(t, local)
	assert.Greater(t, frames, 5, "the fetched video decodes here with frames")
	assert.Greater(t, dur, 1.0)
	assert.Equal(t, 1280, width)
	left, _ := filepath.Glob(filepath.Join(h.root, "tmp", "crabbox-rec.*"))
	assert.Empty(t, left, "the recording is removed from the box after the fetch")

	// WebM to a local path, kept on the box.
	local2 := filepath.Join(t.TempDir(), "rec.webm")
	rec2, err := h.l.Record(ctx, time.Second, crabbox.WithRecordFormat(crabbox.FormatWebM), crabbox.RecordTo(local2),
		crabbox.KeepOnBox(), crabbox.WithFramerate(5))
	require.NoError(t, err)
	assert.Nil(t, rec2.Data)
	assert.Equal(t, local2, rec2.LocalPath)
	frames, dur, _ = ffprobe(t, local2)
	assert.Greater(t, frames, 0)
	assert.Greater(t, dur, 0.0)
	assert.FileExists(t, filepath.Join(h.root, rec2.RemotePath))
	var fetched bytes.Buffer
	n, err := h.l.Fetch(ctx, rec2.RemotePath, &fetched)
	require.NoError(t, err)
	want, err := os.ReadFile(local2)
	require.NoError(t, err)
	assert.Equal(t, int64(len(want)), n)
	assert.True(t, bytes.Equal(want, fetched.Bytes()), "Fetch returns the file's bytes")

	// The smoke check keeps the video as evidence.
	dir := t.TempDir()
	rep, err := crabbox.Smoke(ctx, h.l, []crabbox.SmokeCheck{crabbox.RecordingNotEmpty(time.Second)}, crabbox.WithEvidenceDir(dir))
	require.NoError(t, err, "%+v", rep)
	r := rep.Results[0]
	assert.Equal(t, crabbox.KindRecording, r.Kind)
	require.Len(t, r.Evidence, 1)
	assert.True(t, strings.HasSuffix(r.Evidence[0], ".mp4"), r.Evidence[0])
	frames, _, _ = ffprobe(t, r.Evidence[0])
	assert.Greater(t, frames, 0)
	assert.Contains(t, r.Output, "ffprobe")
}

// TestDesktopRecordCancelledLeavesNothing cancels Record's context while
// ffmpeg records on the box: no ffmpeg keeps recording and no file stays.
func TestDesktopRecordCancelledLeavesNothing(t *testing.T) {
	needDesktopTools(t, desktopTools...)
	h := startDesktopHost(t, hostOptions{})
	h.mustBootstrap(t)
	marker := filepath.Join(h.root, "tmp", "crabbox-rec.")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fired := cancelWhenRunning(ctx, cancel, marker, false)
	rec, err := h.l.Record(ctx, 40*time.Second)
	require.True(t, <-fired, "ffmpeg was never seen recording")
	require.Error(t, err)
	assert.ErrorIs(t, err, context.Canceled)
	assert.Nil(t, rec)
	assert.Empty(t, procsWith(marker), "ffmpeg of the cancelled Record still runs")
	left, err := filepath.Glob(filepath.Join(h.root, "tmp", "crabbox-rec.*"))
	require.NoError(t, err)
	assert.Empty(t, left, "the cancelled Record left its file on the box")
}
