// The hand-written YAML: the writer Render uses and a reader for the subset
// it writes.

package cloudinit

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// This file holds the hand-written YAML used by Render and a reader for the
// subset of YAML that Render writes. The reader is not a general YAML
// parser: it understands block mappings and sequences indented with spaces,
// "- " sequence items whose first line may start a mapping, literal block
// scalars ("|" and "|-"), double-quoted and single-quoted scalars, plain
// scalars, empty flow collections ("[]", "{}") and flow sequences of scalars
// ("[a, "b c"]"). Anything else is an error, never a panic.

// yamlQuote returns s as a YAML double-quoted scalar. Control characters are
// escaped; other characters are written as they are (s must be valid UTF-8,
// which the callers check).
func yamlQuote(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r == 0x85 || r == 0x2028 || r == 0x2029 || r == 0xfeff:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// yamlBlock writes s as a literal block scalar after a key ("key: |" then
// the indented lines). s must end with exactly one newline and must not
// start with a space or contain lines that would need an indentation
// indicator; callers make sure of that (see blockSafe).
func yamlBlock(b *strings.Builder, indent int, s string) {
	b.WriteString("|\n")
	pad := strings.Repeat(" ", indent)
	for _, line := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		if line == "" {
			b.WriteString("\n")
			continue
		}
		b.WriteString(pad)
		b.WriteString(line)
		b.WriteString("\n")
	}
}

// blockSafe reports whether s can be written with yamlBlock and read back
// unchanged.
func blockSafe(s string) bool {
	if !utf8.ValidString(s) || !strings.HasSuffix(s, "\n") || strings.HasSuffix(s, "\n\n") {
		return false
	}
	if strings.HasPrefix(s, " ") || strings.HasPrefix(s, "\n") || strings.HasPrefix(s, "\t") || strings.Contains(s, "\n\t") {
		return false
	}
	for _, r := range s {
		if (r < 0x20 && r != '\n' && r != '\t') || r == 0x7f || r == '\r' {
			return false
		}
	}
	return true
}

// node is a parsed YAML value: exactly one of the fields is meaningful,
// chosen by kind.
type node struct {
	kind   nodeKind
	scalar string
	seq    []*node
	keys   []string // mapping keys in document order
	m      map[string]*node
	line   int
}

type nodeKind int

const (
	scalarNode nodeKind = iota + 1
	seqNode
	mapNode
)

func (n *node) get(key string) *node {
	if n == nil || n.kind != mapNode {
		return nil
	}
	return n.m[key]
}

// srcLine is one significant line of the document.
type srcLine struct {
	num    int // 1-based line number
	indent int
	text   string // without the indentation
	raw    string // the whole line
}

type yamlParser struct {
	lines []srcLine
	all   []string // every raw line, for block scalars (which keep blank lines)
	pos   int
}

// parseYAML parses a document in the subset described above. The document's
// top level must be a mapping.
func parseYAML(doc string) (*node, error) {
	if !utf8.ValidString(doc) {
		return nil, fmt.Errorf("user-data is not valid UTF-8")
	}
	doc = strings.ReplaceAll(doc, "\r\n", "\n")
	p := &yamlParser{all: strings.Split(doc, "\n")}
	for i, raw := range p.all {
		trimmed := strings.TrimLeft(raw, " ")
		if strings.HasPrefix(trimmed, "\t") {
			return nil, fmt.Errorf("line %d: tab indentation is not supported", i+1)
		}
		t := strings.TrimRight(trimmed, " \t")
		if t == "" || strings.HasPrefix(t, "#") || t == "---" {
			continue
		}
		p.lines = append(p.lines, srcLine{num: i + 1, indent: len(raw) - len(trimmed), text: t, raw: raw})
	}
	if len(p.lines) == 0 {
		return &node{kind: mapNode, m: map[string]*node{}}, nil
	}
	if p.lines[0].indent != 0 {
		return nil, fmt.Errorf("line %d: unexpected indentation", p.lines[0].num)
	}
	n, err := p.parseBlock(0)
	if err != nil {
		return nil, err
	}
	if p.pos < len(p.lines) {
		return nil, fmt.Errorf("line %d: unexpected content", p.lines[p.pos].num)
	}
	if n.kind != mapNode {
		return nil, fmt.Errorf("top level is not a mapping")
	}
	return n, nil
}

// parseBlock parses the block collection starting at the current line,
// whose lines are indented exactly indent.
func (p *yamlParser) parseBlock(indent int) (*node, error) {
	l := p.lines[p.pos]
	if l.indent != indent {
		return nil, fmt.Errorf("line %d: bad indentation", l.num)
	}
	if l.text == "-" || strings.HasPrefix(l.text, "- ") {
		return p.parseSeq(indent)
	}
	return p.parseMap(indent, "")
}

// parseMap parses mapping entries at indent. If first is not empty, it is
// the text of the first entry, which sits on a sequence item's line.
func (p *yamlParser) parseMap(indent int, first string) (*node, error) {
	n := &node{kind: mapNode, m: map[string]*node{}}
	if first != "" {
		n.line = p.lines[p.pos].num
		if err := p.parseEntry(n, indent, first); err != nil {
			return nil, err
		}
	} else {
		n.line = p.lines[p.pos].num
	}
	for p.pos < len(p.lines) {
		l := p.lines[p.pos]
		if l.indent < indent {
			break
		}
		if l.indent > indent {
			return nil, fmt.Errorf("line %d: bad indentation", l.num)
		}
		if l.text == "-" || strings.HasPrefix(l.text, "- ") {
			return nil, fmt.Errorf("line %d: sequence item inside a mapping", l.num)
		}
		if err := p.parseEntry(n, indent, l.text); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// parseEntry parses one "key: value" entry whose text is given; the entry
// is on line p.pos, and its nested lines are indented more than indent.
func (p *yamlParser) parseEntry(n *node, indent int, text string) error {
	l := p.lines[p.pos]
	key, rest, err := splitKey(text)
	if err != nil {
		return fmt.Errorf("line %d: %v", l.num, err)
	}
	if _, dup := n.m[key]; dup {
		return fmt.Errorf("line %d: duplicate key %q", l.num, key)
	}
	p.pos++
	var v *node
	switch {
	case rest == "":
		// Nested block, or null.
		if p.pos < len(p.lines) && p.lines[p.pos].indent > indent {
			v, err = p.parseBlock(p.lines[p.pos].indent)
		} else if p.pos < len(p.lines) && p.lines[p.pos].indent == indent &&
			(p.lines[p.pos].text == "-" || strings.HasPrefix(p.lines[p.pos].text, "- ")) {
			// "key:" followed by a sequence at the same indentation.
			v, err = p.parseSeq(indent)
		} else {
			v = &node{kind: scalarNode}
		}
	case rest[0] == '|':
		v, err = p.parseBlockScalar(l, indent, rest)
	default:
		v, err = parseInline(rest)
		if err != nil {
			err = fmt.Errorf("line %d: %v", l.num, err)
		}
	}
	if err != nil {
		return err
	}
	v.line = l.num
	n.keys = append(n.keys, key)
	n.m[key] = v
	return nil
}

// parseSeq parses "- item" lines at indent.
func (p *yamlParser) parseSeq(indent int) (*node, error) {
	n := &node{kind: seqNode, line: p.lines[p.pos].num}
	for p.pos < len(p.lines) {
		l := p.lines[p.pos]
		if l.indent < indent {
			break
		}
		if l.indent > indent {
			return nil, fmt.Errorf("line %d: bad indentation", l.num)
		}
		if l.text != "-" && !strings.HasPrefix(l.text, "- ") {
			break // a mapping key after "key:" + sequence at the same level
		}
		item := strings.TrimLeft(strings.TrimPrefix(l.text, "-"), " ")
		itemIndent := indent + (len(l.text) - len(item))
		var v *node
		var err error
		switch {
		case item == "":
			p.pos++
			if p.pos < len(p.lines) && p.lines[p.pos].indent > indent {
				v, err = p.parseBlock(p.lines[p.pos].indent)
			} else {
				v = &node{kind: scalarNode}
			}
		case isMapEntry(item):
			v, err = p.parseMap(itemIndent, item)
		case item[0] == '|':
			p.pos++
			v, err = p.parseBlockScalar(l, indent, item)
		default:
			p.pos++
			v, err = parseInline(item)
			if err != nil {
				err = fmt.Errorf("line %d: %v", l.num, err)
			}
		}
		if err != nil {
			return nil, err
		}
		n.seq = append(n.seq, v)
	}
	return n, nil
}

// parseBlockScalar reads a literal block scalar introduced on line l (whose
// entry has indentation parent) by header ("|" or "|-"). p.pos is the
// index of the next significant line.
func (p *yamlParser) parseBlockScalar(l srcLine, parent int, header string) (*node, error) {
	strip := false
	switch header {
	case "|":
	case "|-":
		strip = true
	default:
		return nil, fmt.Errorf("line %d: unsupported block scalar header %q", l.num, header)
	}
	// Raw lines after l.num (1-based) are all[l.num:].
	var content []string
	ind := -1
	i := l.num
	for ; i < len(p.all); i++ {
		raw := p.all[i]
		if strings.TrimRight(raw, " ") == "" {
			content = append(content, "")
			continue
		}
		lead := len(raw) - len(strings.TrimLeft(raw, " "))
		if ind < 0 {
			if lead <= parent {
				break
			}
			ind = lead
		}
		if lead < ind {
			break
		}
		content = append(content, raw[ind:])
	}
	// Trailing blank lines belong to the block only for chomping.
	trailing := 0
	for len(content) > 0 && content[len(content)-1] == "" {
		content = content[:len(content)-1]
		trailing++
	}
	// Skip the significant lines the block consumed.
	for p.pos < len(p.lines) && p.lines[p.pos].num <= i-trailing {
		p.pos++
	}
	s := strings.Join(content, "\n")
	if !strip && s != "" {
		s += "\n"
	}
	return &node{kind: scalarNode, scalar: s}, nil
}

// isMapEntry reports whether text starts a "key: value" pair.
func isMapEntry(text string) bool {
	if text == "" || text[0] == '"' || text[0] == '\'' || text[0] == '[' || text[0] == '{' || text[0] == '|' {
		return false
	}
	_, _, err := splitKey(text)
	return err == nil
}

// splitKey splits "key: rest" (or "key:").
func splitKey(text string) (key, rest string, err error) {
	i := strings.Index(text, ": ")
	if i < 0 {
		if strings.HasSuffix(text, ":") {
			i = len(text) - 1
		} else {
			return "", "", fmt.Errorf("expected \"key: value\", got %q", text)
		}
	}
	key = text[:i]
	if key == "" || strings.ContainsAny(key, "\"'[]{}#,") {
		return "", "", fmt.Errorf("unsupported key %q", key)
	}
	rest = strings.TrimSpace(text[i+1:])
	if strings.HasPrefix(rest, "#") {
		rest = ""
	}
	return key, rest, nil
}

// parseInline parses a scalar or flow sequence written on one line.
func parseInline(s string) (*node, error) {
	switch {
	case s == "[]":
		return &node{kind: seqNode}, nil
	case s == "{}":
		return &node{kind: mapNode, m: map[string]*node{}}, nil
	case s[0] == '[':
		return parseFlowSeq(s)
	case s[0] == '{':
		return nil, fmt.Errorf("flow mappings are not supported")
	}
	v, rest, err := parseScalar(s, false)
	if err != nil {
		return nil, err
	}
	if rest = strings.TrimSpace(rest); rest != "" && !strings.HasPrefix(rest, "#") {
		return nil, fmt.Errorf("unexpected %q after value", rest)
	}
	return &node{kind: scalarNode, scalar: v}, nil
}

func parseFlowSeq(s string) (*node, error) {
	n := &node{kind: seqNode}
	rest := strings.TrimSpace(s[1:])
	for {
		if rest == "" {
			return nil, fmt.Errorf("unterminated flow sequence")
		}
		if rest[0] == ']' {
			if tail := strings.TrimSpace(rest[1:]); tail != "" && !strings.HasPrefix(tail, "#") {
				return nil, fmt.Errorf("unexpected %q after flow sequence", tail)
			}
			return n, nil
		}
		v, r, err := parseScalar(rest, true)
		if err != nil {
			return nil, err
		}
		n.seq = append(n.seq, &node{kind: scalarNode, scalar: v})
		rest = strings.TrimSpace(r)
		switch {
		case strings.HasPrefix(rest, ","):
			rest = strings.TrimSpace(rest[1:])
			if strings.HasPrefix(rest, "]") {
				return nil, fmt.Errorf("empty item in flow sequence")
			}
		case strings.HasPrefix(rest, "]"):
		default:
			return nil, fmt.Errorf("expected , or ] in flow sequence, got %q", rest)
		}
	}
}

// parseScalar parses a quoted or plain scalar at the start of s and returns
// it with the rest of s. In flow context, plain scalars end at "," or "]".
func parseScalar(s string, flow bool) (string, string, error) {
	switch s[0] {
	case '"':
		return parseDoubleQuoted(s)
	case '\'':
		var b strings.Builder
		for i := 1; i < len(s); i++ {
			if s[i] == '\'' {
				if i+1 < len(s) && s[i+1] == '\'' {
					b.WriteByte('\'')
					i++
					continue
				}
				return b.String(), s[i+1:], nil
			}
			b.WriteByte(s[i])
		}
		return "", "", fmt.Errorf("unterminated single-quoted string")
	}
	end := len(s)
	if flow {
		if i := strings.IndexAny(s, ",]"); i >= 0 {
			end = i
		}
	}
	if i := strings.Index(s[:end], " #"); i >= 0 {
		end = i
	}
	v := strings.TrimSpace(s[:end])
	if v == "" {
		return "", "", fmt.Errorf("empty plain scalar")
	}
	if strings.ContainsAny(v[:1], "&*!%@`>") {
		return "", "", fmt.Errorf("unsupported YAML syntax %q", v)
	}
	return v, s[end:], nil
}

func parseDoubleQuoted(s string) (string, string, error) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch c {
		case '"':
			return b.String(), s[i+1:], nil
		case '\\':
			if i+1 >= len(s) {
				return "", "", fmt.Errorf("unterminated escape")
			}
			i++
			switch e := s[i]; e {
			case '"', '\\', '/':
				b.WriteByte(e)
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			case 'r':
				b.WriteByte('\r')
			case '0':
				b.WriteByte(0)
			case 'a':
				b.WriteByte(7)
			case 'b':
				b.WriteByte(8)
			case 'v':
				b.WriteByte(11)
			case 'f':
				b.WriteByte(12)
			case 'e':
				b.WriteByte(27)
			case ' ':
				b.WriteByte(' ')
			case 'x', 'u', 'U':
				n := map[byte]int{'x': 2, 'u': 4, 'U': 8}[e]
				if i+n >= len(s) {
					return "", "", fmt.Errorf("short \\%c escape", e)
				}
				v, err := strconv.ParseUint(s[i+1:i+1+n], 16, 32)
				if err != nil || !utf8.ValidRune(rune(v)) {
					return "", "", fmt.Errorf("bad \\%c escape", e)
				}
				b.WriteRune(rune(v))
				i += n
			default:
				return "", "", fmt.Errorf("unsupported escape \\%c", e)
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", "", fmt.Errorf("unterminated double-quoted string")
}
