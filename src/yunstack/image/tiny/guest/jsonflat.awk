# Flattens one JSON document into "path<TAB>value" lines, because busybox has
# no JSON tool and sed patterns pick the wrong "name" once nested objects
# repeat a key.  Object keys join with ".", array items use their index;
# only scalars are printed.  A string holding newlines prints one line per
# line of text, so a public key ending in "\n" prints cleanly.  \uXXXX
# escapes outside ASCII become "?": nothing we read needs them.
#
#   {"uuid": "u1", "public_keys": {"k": "ssh-ed25519 AAA x\n"}, "keys": [1]}
#   ->  uuid<TAB>u1
#       public_keys.k<TAB>ssh-ed25519 AAA x
#       keys.0<TAB>1
{ text = text $0 "\n" }
END {
    n = length(text)
    pos = 1
    value("")
}
function skip_space() {
    while (pos <= n && index(" \t\r\n", substr(text, pos, 1)) > 0)
        pos++
}
function join(path, key) {
    return path == "" ? key : path "." key
}
function emit(path, s,    lines, count, i) {
    count = split(s, lines, "\n")
    if (count == 0)
        printf "%s\t\n", path
    for (i = 1; i <= count; i++)
        if (lines[i] != "" || count == 1)
            printf "%s\t%s\n", path, lines[i]
}
function value(path,    c, start) {
    skip_space()
    c = substr(text, pos, 1)
    if (c == "{") {
        object(path)
    } else if (c == "[") {
        array(path)
    } else if (c == "\"") {
        emit(path, string())
    } else {
        start = pos
        while (pos <= n && index(",}] \t\r\n", substr(text, pos, 1)) == 0)
            pos++
        emit(path, substr(text, start, pos - start))
    }
}
function object(path,    key, c) {
    pos++
    skip_space()
    if (substr(text, pos, 1) == "}") { pos++; return }
    while (pos <= n) {
        skip_space()
        key = string()
        skip_space()
        pos++
        value(join(path, key))
        skip_space()
        c = substr(text, pos, 1)
        pos++
        if (c != ",") return
    }
}
function array(path,    i, c) {
    pos++
    skip_space()
    if (substr(text, pos, 1) == "]") { pos++; return }
    for (i = 0; pos <= n; i++) {
        value(join(path, i))
        skip_space()
        c = substr(text, pos, 1)
        pos++
        if (c != ",") return
    }
}
function string(    out, c, e, code) {
    pos++
    out = ""
    while (pos <= n) {
        c = substr(text, pos, 1)
        pos++
        if (c == "\"") return out
        if (c != "\\") { out = out c; continue }
        e = substr(text, pos, 1)
        pos++
        if (e == "n") out = out "\n"
        else if (e == "t") out = out "\t"
        else if (e == "r" || e == "b" || e == "f") out = out ""
        else if (e == "u") {
            code = substr(text, pos, 4)
            pos += 4
            out = out (code ~ /^00[2-7][0-9a-fA-F]$/ ? sprintf("%c", hex(code)) : "?")
        }
        else out = out e
    }
    return out
}
function hex(s,    i, v) {
    v = 0
    for (i = 1; i <= length(s); i++)
        v = v * 16 + index("0123456789abcdef", tolower(substr(s, i, 1))) - 1
    return v
}
