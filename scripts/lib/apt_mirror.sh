# shellcheck shell=bash
# Finds the Debian mirror this host's apt already uses, so the scripts never name a mirror host of
# their own. Sourced by scripts/setup.sh and scripts/build-lab-qemu.sh.
#
#   apt_source_entries            every enabled entry of apt's sources, one per line:
#                                 TYPE URI SUITE COMPONENT... (TYPE: deb or deb-src)
#   apt_mirror_uri SUITE [COMP]   the URI of the first enabled `deb` entry for SUITE with component
#                                 COMP (default main); status 1 (and nothing printed) if none
#   apt_has_entry TYPE SUITE [COMP]  status 0 if an enabled TYPE entry serves SUITE with COMP
#
# Both formats are read: one-line entries in sources.list and sources.list.d/*.list
# (`deb [options] URI SUITE COMPONENT...`) and deb822 stanzas in sources.list.d/*.sources
# (Types/URIs/Suites/Components, `Enabled: no` skips a stanza). The directory is apt's own
# (apt-config's Dir::Etc), or APT_MIRROR_ETC for tests.

apt_mirror_etc() {
  if [[ -n ${APT_MIRROR_ETC:-} ]]; then
    echo "$APT_MIRROR_ETC"
    return
  fi
  local etc=""
  if command -v apt-config >/dev/null; then
    etc=$(apt-config shell etc Dir::Etc/d 2>/dev/null | sed -n "s/^etc='\(.*\)'$/\1/p")
  fi
  echo "${etc:-/etc/apt/}"
}

apt_source_entries() {
  local etc
  etc=$(apt_mirror_etc)
  etc=${etc%/}
  local -a lists=() deb822=()
  [[ -f $etc/sources.list ]] && lists+=("$etc/sources.list")
  local f
  for f in "$etc"/sources.list.d/*.list; do [[ -f $f ]] && lists+=("$f"); done
  for f in "$etc"/sources.list.d/*.sources; do [[ -f $f ]] && deb822+=("$f"); done
  if ((${#lists[@]})); then
    awk '
      { sub(/#.*/, "") }
      $1 != "deb" && $1 != "deb-src" { next }
      {
        type = $1; i = 2
        if ($i ~ /^\[/) {               # options: [arch=amd64 signed-by=...], maybe several words
          while (i <= NF && $i !~ /\]$/) i++
          i++
        }
        if (i + 1 > NF) next
        line = type " " $i " " $(i + 1)
        for (j = i + 2; j <= NF; j++) line = line " " $j
        print line
      }' "${lists[@]}"
  fi
  if ((${#deb822[@]})); then
    awk '
      function flush(   t, u, s, nt, nu, ns, tt, uu, ss) {
        if (types != "" && uris != "" && suites != "" && tolower(enabled) != "no") {
          nt = split(types, tt, " "); nu = split(uris, uu, " "); ns = split(suites, ss, " ")
          for (t = 1; t <= nt; t++) for (u = 1; u <= nu; u++) for (s = 1; s <= ns; s++)
            print tt[t] " " uu[u] " " ss[s] (comps == "" ? "" : " " comps)
        }
        types = uris = suites = comps = enabled = ""; last = ""
      }
      FNR == 1 { flush() }
      /^#/ { next }
      /^[ \t]*$/ { flush(); next }
      /^[ \t]/ {                       # a folded continuation of the last field
        v = $0; gsub(/^[ \t]+|[ \t]+$/, "", v)
        if (last == "types") types = types " " v
        else if (last == "uris") uris = uris " " v
        else if (last == "suites") suites = suites " " v
        else if (last == "components") comps = comps " " v
        next
      }
      {
        key = tolower($0); sub(/:.*/, "", key)
        v = $0; sub(/^[^:]*:[ \t]*/, "", v); sub(/[ \t]+$/, "", v)
        last = key
        if (key == "types") types = v
        else if (key == "uris") uris = v
        else if (key == "suites") suites = v
        else if (key == "components") comps = v
        else if (key == "enabled") enabled = v
      }
      END { flush() }' "${deb822[@]}"
  fi
}

# Entries whose TYPE, SUITE and component match: their URIs, in apt's order.
apt_matching_uris() {
  local type=$1 suite=$2 comp=${3:-main}
  apt_source_entries | awk -v type="$type" -v suite="$suite" -v comp="$comp" '
    $1 == type && $3 == suite { for (i = 4; i <= NF; i++) if ($i == comp) { print $2; next } }'
}

apt_mirror_uri() {
  local uri
  uri=$(apt_matching_uris deb "$1" "${2:-main}" | awk 'NR == 1')
  [[ -n $uri ]] || return 1
  echo "${uri%/}"
}

apt_has_entry() {
  [[ -n $(apt_matching_uris "$1" "$2" "${3:-main}") ]]
}
