# Records the display with ffmpeg into DIR for SECS seconds.
# Set before it: FORMAT, FPS, SECS, DIR. Runs after desktop_prelude.sh.
need_display
need ffmpeg
mkdir -p "$R/tmp" 2>/dev/null
P="$R$DIR"
mkdir -m 700 "$P" || exit 1
f="$P/recording.$FORMAT"
if [ "$FORMAT" = webm ]; then
  set -- -c:v libvpx -deadline realtime -cpu-used 8 -b:v 2M
elif ffmpeg -hide_banner -encoders 2>/dev/null | grep -q ' libx264 '; then
  set -- -c:v libx264 -preset ultrafast -pix_fmt yuv420p
else
  set -- -c:v mpeg4 -q:v 4
fi
ffmpeg -nostdin -hide_banner -nostats -loglevel error -y -f x11grab -draw_mouse 0 -framerate "$FPS" -i "$D" \
  -t "$SECS" "$@" -progress "$P/progress" "$f" 2>"$P/ffmpeg.log"
rc=$?
if [ "$rc" != 0 ] || [ ! -s "$f" ]; then
  echo "crabbox: ffmpeg exited $rc:" >&2
  tail -n 20 "$P/ffmpeg.log" >&2
  rm -rf -- "$P"
  exit 1
fi
printf 'path=%s\nsize=%s\n' "${f#"$R"}" "$(wc -c <"$f" | tr -d ' ')"
if command -v ffprobe >/dev/null 2>&1; then
  echo source=ffprobe
  ffprobe -v error -count_frames -select_streams v:0 \
    -show_entries stream=codec_name,width,height,nb_read_frames:format=duration \
    -of default=noprint_wrappers=1 "$f"
else
  echo source=ffmpeg
  grep -E '^(frame|out_time_us)=' "$P/progress" | tail -n 2
fi
