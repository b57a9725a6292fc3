# The NoOperatorNotes check; runs between smoke_hygiene_prelude.sh and smoke_hygiene_epilogue.sh.
for H in $(homes) "$WORK"; do
  [ -d "$H" ] || continue
  report "operator note" "$(s find "$H" -mindepth 1 -maxdepth 2 -name '.*' -prune -o -type f \( -iname 'notes*' -o -iname 'todo*' -o -iname '*.md' -o -iname '*.txt' \) -print 2>/dev/null)"
  report "screenshot or video" "$(s find "$H" -mindepth 1 -maxdepth 5 -name '.*' -prune -o -type f \( -iname '*.png' -o -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.gif' -o -iname '*.mp4' -o -iname '*.webm' -o -iname '*.mkv' \) -print 2>/dev/null)"
done
