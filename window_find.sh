# Lists the visible windows whose title or class matches PAT.
# Set before it: PAT. Runs after desktop_prelude.sh.
need_display
need xdotool
export DISPLAY="$D"
ids=$( { xdotool search --onlyvisible --name "$PAT"; xdotool search --onlyvisible --class "$PAT"; } 2>/dev/null | sort -u)
[ -n "$ids" ] || exit 1
for w in $ids; do
  WIDTH=0; HEIGHT=0
  eval "$(xdotool getwindowgeometry --shell "$w" 2>/dev/null | grep -E '^(WIDTH|HEIGHT)=[0-9]+$')"
  printf '%s\t%s\t%s\t%s\n' "$w" "$WIDTH" "$HEIGHT" "$(xdotool getwindowname "$w" 2>/dev/null | tr '\t\n' '  ')"
done
