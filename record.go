// Recording the lease's display: Lease.Record captures a video with ffmpeg,
// fetches it and describes it (VideoInfo).

package crabbox

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

type recordOptions struct {
	localPath string
	format    string
	fps       int
	keep      bool
}

// RecordOption configures Record.
type RecordOption func(*recordOptions) error

// RecordTo writes the recording to a local file instead of returning its
// bytes in Recording.Data.
func RecordTo(localPath string) RecordOption {
	return func(o *recordOptions) error {
		if strings.TrimSpace(localPath) == "" {
			return fmt.Errorf("%w: empty local path", ErrInvalidArgument)
		}
		o.localPath = localPath
		return nil
	}
}

// WithRecordFormat picks FormatMP4 (default) or FormatWebM.
func WithRecordFormat(format string) RecordOption {
	return func(o *recordOptions) error {
		if format != FormatMP4 && format != FormatWebM {
			return fmt.Errorf("%w: recording format %q (want mp4 or webm)", ErrInvalidArgument, format)
		}
		o.format = format
		return nil
	}
}

// WithFramerate sets the frames per second captured (default 10).
func WithFramerate(fps int) RecordOption {
	return func(o *recordOptions) error {
		if fps < 1 || fps > 60 {
			return fmt.Errorf("%w: framerate %d out of range [1, 60]", ErrInvalidArgument, fps)
		}
		o.fps = fps
		return nil
	}
}

// KeepOnBox leaves the recording on the box after fetching it (by default
// Record removes it, so no video stays behind to be baked).
func KeepOnBox() RecordOption { return func(o *recordOptions) error { o.keep = true; return nil } }

// VideoInfo describes a recorded video.
type VideoInfo struct {
	// Duration of the video stream (container duration).
	Duration time.Duration `json:"-"`
	// Frames counted in the video stream.
	Frames int    `json:"frames"`
	Width  int    `json:"width,omitempty"`
	Height int    `json:"height,omitempty"`
	Codec  string `json:"codec,omitempty"`
	// Source is "ffprobe" when ffprobe decoded the file on the box, or
	// "ffmpeg" when the numbers come from ffmpeg's own progress report
	// (no ffprobe on the box).
	Source string `json:"source"`
}

// Recording is a screen recording Record made.
type Recording struct {
	// RemotePath is where the video was written on the box (removed
	// after the fetch unless KeepOnBox).
	RemotePath string `json:"remote_path"`
	// LocalPath is the local file written with RecordTo.
	LocalPath string `json:"local_path,omitempty"`
	Format    string `json:"format"`
	// Requested is the duration asked for.
	Requested time.Duration `json:"-"`
	// Size in bytes.
	Size  int64     `json:"size"`
	Video VideoInfo `json:"video"`
	// Data holds the video when no RecordTo path was given.
	Data []byte `json:"-"`
}

//go:embed record.sh
var recordScript string

// Record records the lease's display for d with ffmpeg (x11grab) into a
// file on the box, measures it (ffprobe on the box when installed, else
// ffmpeg's progress report), fetches it, and removes it from the box
// unless KeepOnBox. The video is returned in Recording.Data, or written to
// the RecordTo path. Errors match ErrNoDisplay, ErrMissingTool (ffmpeg) or
// ErrInvalidArgument. When Record fails or ctx is cancelled while ffmpeg
// records, it stops ffmpeg and removes the file from the box (detached from
// ctx's cancellation, bounded in time (30 s)), KeepOnBox or not.
func (l *Lease) Record(ctx context.Context, d time.Duration, opts ...RecordOption) (*Recording, error) {
	if err := l.usable("record"); err != nil {
		return nil, err
	}
	rec, err := record(ctx, leaseTarget{l}, d, opts...)
	if err != nil {
		return rec, l.c.opErr("record", l.ID, err)
	}
	return rec, nil
}

func record(ctx context.Context, r boxRunner, d time.Duration, opts ...RecordOption) (*Recording, error) {
	o := recordOptions{format: FormatMP4, fps: 10}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if d < 100*time.Millisecond || d > 6*time.Hour {
		return nil, fmt.Errorf("%w: recording duration %v out of range [100ms, 6h]", ErrInvalidArgument, d)
	}
	dir, err := boxTempDir("crabbox-rec.")
	if err != nil {
		return nil, err
	}
	script := "FORMAT=" + o.format + "\nFPS=" + strconv.Itoa(o.fps) +
		"\nSECS=" + strconv.FormatFloat(d.Seconds(), 'f', 3, 64) + "\nDIR=" + ShellQuote(dir) + "\n" + recordScript
	out, err := runScript(ctx, r, "recording the display", script, nil)
	if err != nil {
		if startedNothing(err) {
			return nil, err
		}
		// ffmpeg may still record (the killed script's child): stop it
		// and remove the file.
		return nil, errors.Join(err, cleanupBoxDir(ctx, r, dir, true))
	}
	kv := keyValues(out)
	rec := &Recording{RemotePath: kv["path"], Format: o.format, Requested: d}
	if filepath.Dir(rec.RemotePath) != dir {
		err := fmt.Errorf("recording the display: unexpected output from the box: %q", out)
		return nil, errors.Join(err, cleanupBoxDir(ctx, r, dir, true))
	}
	rec.Size, _ = strconv.ParseInt(kv["size"], 10, 64)
	rec.Video = parseVideoInfo(kv)

	// Fetch, then remove the box's copy (also when the fetch failed).
	var ferr error
	if o.localPath != "" {
		ferr = fetchToFile(ctx, r, rec.RemotePath, o.localPath)
		if ferr == nil {
			rec.LocalPath = o.localPath
		}
	} else {
		var buf bytes.Buffer
		if _, ferr = fetch(ctx, r, rec.RemotePath, &buf); ferr == nil {
			rec.Data = buf.Bytes()
		}
	}
	if !o.keep {
		if rerr := cleanupBoxDir(ctx, r, dir, false); rerr != nil {
			ferr = errors.Join(ferr, rerr)
		}
	}
	if ferr != nil {
		return rec, ferr
	}
	return rec, nil
}

// parseVideoInfo reads ffprobe's default output, or ffmpeg's progress keys.
func parseVideoInfo(kv map[string]string) VideoInfo {
	v := VideoInfo{Source: kv["source"], Codec: kv["codec_name"]}
	v.Width, _ = strconv.Atoi(kv["width"])
	v.Height, _ = strconv.Atoi(kv["height"])
	if v.Source == "ffprobe" {
		v.Frames, _ = strconv.Atoi(kv["nb_read_frames"])
		if s, err := strconv.ParseFloat(kv["duration"], 64); err == nil {
			v.Duration = fromSeconds(s)
		}
	} else {
		v.Frames, _ = strconv.Atoi(kv["frame"])
		if us, err := strconv.ParseInt(kv["out_time_us"], 10, 64); err == nil && us > 0 {
			v.Duration = time.Duration(us) * time.Microsecond
		}
	}
	return v
}

type videoInfoJSON VideoInfo

// MarshalJSON adds the duration as float seconds ("duration_seconds").
func (v VideoInfo) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		videoInfoJSON
		DurationSeconds float64 `json:"duration_seconds"`
	}{videoInfoJSON(v), seconds(v.Duration)})
}

type recordingJSON Recording

// MarshalJSON adds the requested duration as float seconds
// ("requested_seconds").
func (r Recording) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		recordingJSON
		RequestedSeconds float64 `json:"requested_seconds"`
	}{recordingJSON(r), seconds(r.Requested)})
}

// Check reports whether the video has a positive duration and frames.
func (v VideoInfo) Check() error {
	var errs []error
	if v.Duration <= 0 {
		errs = append(errs, errors.New("video has no duration"))
	}
	if v.Frames <= 0 {
		errs = append(errs, errors.New("video has no frames"))
	}
	return errors.Join(errs...)
}

// String summarizes the video for reports.
func (v VideoInfo) String() string {
	s := fmt.Sprintf("%.2fs, %d frames", v.Duration.Seconds(), v.Frames)
	if v.Width > 0 {
		s += fmt.Sprintf(", %dx%d", v.Width, v.Height)
	}
	if v.Codec != "" {
		s += ", " + v.Codec
	}
	return s + " (" + v.Source + ")"
}

// Recording formats.
const (
	// FormatMP4 is H.264 (libx264) in MP4, or MPEG-4 part 2 when ffmpeg
	// has no libx264.
	FormatMP4 = "mp4"
	// FormatWebM is VP8 (libvpx) in WebM.
	FormatWebM = "webm"
)
