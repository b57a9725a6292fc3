# Prints the title of window ID.
# Set before it: ID. Runs after desktop_prelude.sh.
need_display
need xdotool
DISPLAY="$D" xdotool getwindowname "$ID"
