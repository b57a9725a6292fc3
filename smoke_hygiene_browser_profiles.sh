# The NoBrowserProfiles check; runs between smoke_hygiene_prelude.sh and smoke_hygiene_epilogue.sh.
for H in $(homes); do
  report "browser profile" "$(s find "$H/.config/chromium" "$H/.config/google-chrome" "$H/.config/google-chrome-beta" "$H/.config/google-chrome-unstable" "$H/.mozilla" "$H/snap/chromium" "$H/snap/firefox" -maxdepth 0 -type d ! -empty 2>/dev/null)"
  report "cookies" "$(s find "$H" -maxdepth 8 -type f \( -name Cookies -o -name Cookies-journal -o -name cookies.sqlite \) 2>/dev/null)"
  report "chat session" "$(s find "$H/.config" -mindepth 1 -maxdepth 1 -type d \( -iname slack -o -iname discord -o -iname 'whatsapp*' -o -iname signal -o -iname 'teams*' \) ! -empty 2>/dev/null)"
done
report "cookies" "$(s find "$WORK" -maxdepth 8 -type f \( -name Cookies -o -name Cookies-journal -o -name cookies.sqlite \) 2>/dev/null)"
