//! Expected outputs are what Go's text/template with sprig.TxtFuncMap() prints.
#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};

use super::{has_actions, render};

fn r(text: &str, data: &Value) -> String {
    match render(text, data) {
        Ok(s) => s,
        Err(e) => panic!("{text:?}: {e}"),
    }
}

fn err(text: &str, data: &Value) -> String {
    match render(text, data) {
        Ok(s) => panic!("{text:?} rendered {s:?}, expected an error"),
        Err(e) => e.to_string(),
    }
}

fn sys() -> Value {
    json!({
        "Values": {
            "node": {"hostname": "node-1", "labels": {"zone": "a", "rack": "r2"}},
            "os": {"name": "Ubuntu"},
            "list": ["a", "b", "c"],
            "empty": "",
            "n": 3,
            "f": 1.5,
            "big": 16000000.0,
            "null": null
        },
        "MachineID": "0123456789",
        "Random": "abcdefgh",
    })
}

// ---- text and fields ----

#[test]
fn text_without_actions_is_returned_unchanged() {
    let d = sys();
    for t in [
        "",
        "plain",
        "a } b }} c",
        "ünïcode {",
        "line\n  {x}\n",
        "$ . | ( )",
    ] {
        assert!(!has_actions(t));
        assert_eq!(r(t, &d), t);
    }
    assert!(has_actions("a {{ .X }}"));
}

#[test]
fn hostname_templates() {
    let d = sys();
    assert_eq!(r("kairos-{{ trunc 4 .MachineID }}", &d), "kairos-0123");
    assert_eq!(r("kairos-{{ .MachineID | trunc 4 }}", &d), "kairos-0123");
    assert_eq!(r("node-{{ trunc 4 .Random }}", &d), "node-abcd");
}

#[test]
fn field_chains_and_missing_keys() {
    let d = sys();
    assert_eq!(r("{{.Values.node.hostname}}", &d), "node-1");
    assert_eq!(r("{{ .Values.os.name }}!", &d), "Ubuntu!");
    assert_eq!(r("{{.Values.nope}}", &d), "<no value>");
    assert_eq!(r("{{.Values.nope.deeper}}", &d), "<no value>");
    assert_eq!(r("{{.Values.null}}", &d), "<no value>");
    assert_eq!(r("{{$.Values.node.hostname}}", &d), "node-1");
    assert_eq!(r("{{ ( .Values.node ).hostname }}", &d), "node-1");
    assert!(err("{{.Values.os.name.x}}", &d).contains("can't evaluate field x in type string"));
}

#[test]
fn printing_values_like_go() {
    let d = json!({"l": [1, "a", null, true], "m": {"b": 2, "a": [1]}, "f": 1.5,
                   "big": 16000000.0, "i": 16000000, "z": 0.0001, "tiny": 0.00001});
    assert_eq!(r("{{.l}}", &d), "[1 a <nil> true]");
    assert_eq!(r("{{.m}}", &d), "map[a:[1] b:2]");
    assert_eq!(r("{{.f}} {{.i}} {{.big}}", &d), "1.5 16000000 1.6e+07");
    assert_eq!(r("{{.z}} {{.tiny}}", &d), "0.0001 1e-05");
    assert_eq!(
        r("{{1.0}} {{3}} {{-2}} {{0x1F}} {{'a'}} {{1e3}}", &d),
        "1 3 -2 31 97 1000"
    );
    assert_eq!(
        r("{{true}} {{false}} {{print nil}}", &d),
        "true false <nil>"
    );
}

#[test]
fn string_literals() {
    let d = json!({});
    assert_eq!(r(r#"{{"a\tb\n\"c\"\\"}}"#, &d), "a\tb\n\"c\"\\");
    assert_eq!(r("{{`raw\\n \"x\"`}}", &d), "raw\\n \"x\"");
    assert_eq!(r(r#"{{"\u00e9\x41"}}"#, &d), "éA");
    assert_eq!(r(r#"{{ "}}" }}"#, &d), "}}");
}

// ---- trim markers and comments ----

#[test]
fn trim_markers() {
    let d = json!({"x": "X"});
    assert_eq!(r("a  \n {{- .x -}} \n\t b", &d), "aXb");
    assert_eq!(r("a {{- .x }} b", &d), "aX b");
    assert_eq!(r("a {{ .x -}} b", &d), "a Xb");
    assert_eq!(r("{{ -3 }}", &d), "-3");
    assert_eq!(r("{{- 3 -}}", &d), "3");
    let yaml = "items:\n{{- range .l }}\n  - {{ . }}\n{{- end }}\n";
    assert_eq!(r(yaml, &json!({"l": [1, 2]})), "items:\n  - 1\n  - 2\n");
}

#[test]
fn comments() {
    let d = json!({});
    assert_eq!(r("a{{/* note */}}b", &d), "ab");
    assert_eq!(r("a {{- /* note\n spans lines */ -}} b", &d), "ab");
    assert!(err("{{/* open", &d).contains("unclosed comment"));
    assert!(err("{{/* x */ 1}}", &d).contains("comment ends before closing delimiter"));
}

// ---- pipelines and functions ----

#[test]
fn pipelines_pass_the_value_last() {
    let d = sys();
    assert_eq!(
        r(r#"{{ .Values.empty | default "fallback" }}"#, &d),
        "fallback"
    );
    assert_eq!(
        r(r#"{{ default "fallback" .Values.os.name }}"#, &d),
        "Ubuntu"
    );
    assert_eq!(r(r#"{{ .Values.missing | default "d" | upper }}"#, &d), "D");
    assert_eq!(
        r(r#"{{ .Values.os.name | lower | replace "u" "U" }}"#, &d),
        "UbUntU"
    );
    assert_eq!(r(r#"{{ "a-b-c" | replace "-" "_" }}"#, &d), "a_b_c");
    assert_eq!(
        r(r#"{{ (trunc 3 .MachineID) | printf "%s!" }}"#, &d),
        "012!"
    );
    assert_eq!(r(r#"{{ upper (trunc 2 (lower "ABC")) }}"#, &d), "AB");
}

#[test]
fn conditionals() {
    let d = sys();
    let t = r#"{{if eq .Values.os.name "Debian"}}deb{{else if eq .Values.os.name "Ubuntu"}}ubu{{else}}other{{end}}"#;
    assert_eq!(r(t, &d), "ubu");
    assert_eq!(r("{{if .Values.empty}}y{{else}}n{{end}}", &d), "n");
    assert_eq!(r("{{if .Values.list}}y{{end}}", &d), "y");
    assert_eq!(r("{{if .Values.missing}}y{{else}}n{{end}}", &d), "n");
    assert_eq!(r("{{if 0}}y{{else}}n{{end}}{{if 0.5}}y{{end}}", &d), "ny");
    assert_eq!(
        r("{{if and .Values.n (not .Values.empty)}}ok{{end}}", &d),
        "ok"
    );
}

#[test]
fn range_over_lists_and_maps() {
    let d = sys();
    assert_eq!(r("{{range .Values.list}}[{{.}}]{{end}}", &d), "[a][b][c]");
    assert_eq!(
        r("{{range $i, $v := .Values.list}}{{$i}}={{$v}} {{end}}", &d),
        "0=a 1=b 2=c "
    );
    assert_eq!(
        r(
            "{{range $k, $v := .Values.node.labels}}{{$k}}:{{$v}};{{end}}",
            &d
        ),
        "rack:r2;zone:a;"
    );
    assert_eq!(r("{{range $v := .Values.list}}{{$v}}{{end}}", &d), "abc");
    assert_eq!(r("{{range .Values.nope}}x{{else}}none{{end}}", &d), "none");
    assert_eq!(r("{{range list}}x{{else}}empty{{end}}", &d), "empty");
    assert_eq!(r("{{range 3}}{{.}}{{end}}", &d), "012");
    assert_eq!(
        r(
            "{{range .Values.list}}{{if eq . \"b\"}}{{continue}}{{end}}{{if eq . \"c\"}}{{break}}{{end}}{{.}}{{end}}",
            &d
        ),
        "a"
    );
    assert_eq!(
        r(
            "{{range .Values.list}}{{$.Values.node.hostname}}{{end}}",
            &d
        ),
        "node-1node-1node-1"
    );
    assert_eq!(
        r(r#"{{range (splitList "," "x,y")}}<{{.}}>{{end}}"#, &d),
        "<x><y>"
    );
    assert!(
        err("{{range .Values.os.name}}{{end}}", &d).contains("range can't iterate over Ubuntu")
    );
}

#[test]
fn with_blocks() {
    let d = sys();
    assert_eq!(r("{{with .Values.node}}{{.hostname}}{{end}}", &d), "node-1");
    assert_eq!(r("{{with .Values.nope}}x{{else}}none{{end}}", &d), "none");
    assert_eq!(
        r(
            "{{with .Values.nope}}a{{else with .Values.os}}{{.name}}{{end}}",
            &d
        ),
        "Ubuntu"
    );
    assert_eq!(
        r("{{with $h := .Values.node.hostname}}{{$h}}{{end}}", &d),
        "node-1"
    );
}

#[test]
fn variables_and_scopes() {
    let d = sys();
    assert_eq!(r("{{$x := 1}}{{$x}}{{$x = 2}}{{$x}}", &d), "12");
    assert_eq!(
        r(
            "{{$n := .Values.node}}{{$n.hostname}} {{$n.labels.zone}}",
            &d
        ),
        "node-1 a"
    );
    // Assignment inside a range changes the outer variable (Go 1.11+).
    assert_eq!(
        r(
            "{{$last := \"\"}}{{range .Values.list}}{{$last = .}}{{end}}{{$last}}",
            &d
        ),
        "c"
    );
    assert!(err("{{if true}}{{$y := 1}}{{end}}{{$y}}", &d).contains("undefined variable \"$y\""));
    assert!(err("{{$z = 1}}", &d).contains("undefined variable"));
}

#[test]
fn define_template_block() {
    let d = sys();
    let t = r#"{{define "h"}}host={{.}}{{end}}{{template "h" .Values.node.hostname}};{{block "b" 2}}b{{.}}{{end}}"#;
    assert_eq!(r(t, &d), "host=node-1;b2");
    assert!(err(r#"{{template "nope"}}"#, &d).contains("no such template"));
    let recursive = r#"{{define "r"}}{{template "r" .}}{{end}}{{template "r" 1}}"#;
    assert!(err(recursive, &d).contains("nested deeper"));
}

#[test]
fn printf_and_print() {
    let d = json!({"s": "str", "n": 42, "f": 12.34567, "l": ["a", "b"]});
    assert_eq!(r(r#"{{printf "%s-%d-%v" .s .n .l}}"#, &d), "str-42-[a b]");
    assert_eq!(
        r(r#"{{printf "%5d|%-5d|%05d" 42 42 -42}}"#, &d),
        "   42|42   |-0042"
    );
    assert_eq!(
        r(r#"{{printf "%.2f %f %e %g" .f 1.5 1234.5678 .f}}"#, &d),
        "12.35 1.500000 1.234568e+03 12.34567"
    );
    assert_eq!(
        r(r#"{{printf "%q %x %X %%" .s 255 "hi"}}"#, &d),
        "\"str\" ff 6869 %"
    );
    assert_eq!(
        r(r#"{{printf "%t %c %T %v" true 65 .l .nope}}"#, &d),
        "true A []interface {} <nil>"
    );
    assert_eq!(
        r(r#"{{printf "%d %s" "x"}}"#, &d),
        "%!d(string=x) %!s(MISSING)"
    );
    assert_eq!(r(r#"{{printf "%s" 1 2}}"#, &d), "%!s(int=1)%!(EXTRA int=2)");
    assert_eq!(
        r(r#"{{print "a" 1 2 "b"}}|{{println 1 "x"}}"#, &d),
        "a1 2b|1 x\n"
    );
}

#[test]
fn comparisons_and_logic() {
    let d = sys();
    assert_eq!(
        r(
            r#"{{eq 1 1}} {{eq "a" "b" "a"}} {{ne 1 2}} {{eq .Values.n 3}}"#,
            &d
        ),
        "true true true true"
    );
    assert_eq!(
        r(
            "{{lt 1 2}} {{le 2 2}} {{gt 1 2}} {{ge 2 3}} {{lt \"a\" \"b\"}}",
            &d
        ),
        "true true false false true"
    );
    assert_eq!(
        r(
            "{{and 1 0 2}} {{and 1 2}} {{or 0 \"\" 3}} {{or 0 \"\"}} {{not 0}}",
            &d
        ),
        "0 2 3  true"
    );
    assert_eq!(
        r("{{eq .Values.missing nil}} {{eq .Values.f 1.5}}", &d),
        "true true"
    );
    // Short-circuit: the failing call is never made.
    assert_eq!(r("{{or 1 (index .Values.list 99)}}", &d), "1");
    assert!(err(r#"{{eq 1 "1"}}"#, &d).contains("incompatible types for comparison"));
    assert!(err("{{lt true false}}", &d).contains("invalid type for comparison"));
}

#[test]
fn index_len_slice() {
    let d = sys();
    assert_eq!(r("{{index .Values.list 1}}", &d), "b");
    assert_eq!(r(r#"{{index .Values "node" "labels" "zone"}}"#, &d), "a");
    assert_eq!(r(r#"{{index .Values.node "nope"}}"#, &d), "<no value>");
    assert_eq!(r(r#"{{index "abc" 0}}"#, &d), "97");
    assert_eq!(
        r(
            "{{len .Values.list}} {{len .Values.node}} {{len \"héllo\"}}",
            &d
        ),
        "3 2 6"
    );
    assert_eq!(
        r("{{slice .Values.list 1}} {{slice \"hello\" 1 3}}", &d),
        "[b c] el"
    );
    assert!(
        err("{{index .Values.list 5}}", &d).contains("error calling index: index out of range: 5")
    );
    assert!(err("{{len 3}}", &d).contains("len of type int"));
}

#[test]
fn escapers() {
    let d = json!({});
    assert_eq!(
        r(r#"{{html "<a href='x'>&</a>"}}"#, &d),
        "&lt;a href=&#39;x&#39;&gt;&amp;&lt;/a&gt;"
    );
    assert_eq!(r(r#"{{js "it's <b>"}}"#, &d), "it\\'s \\u003Cb\\u003E");
    assert_eq!(r(r#"{{urlquery "a b&c=d/é"}}"#, &d), "a+b%26c%3Dd%2F%C3%A9");
}

// ---- Sprig ----

#[test]
fn sprig_strings() {
    let d = json!({"s": "  Hello World  "});
    let cases = [
        (r#"{{trim .s}}"#, "Hello World"),
        (r#"{{trimAll "$" "$5.00$"}}"#, "5.00"),
        (
            r#"{{trimPrefix "foo" "foobar"}} {{trimSuffix "bar" "foobar"}}"#,
            "bar foo",
        ),
        (
            r#"{{upper "abc"}} {{lower "ABC"}} {{title "hello wide-world"}} {{untitle "Hello World"}}"#,
            "ABC abc Hello Wide-World hello world",
        ),
        (r#"{{repeat 3 "ab"}}"#, "ababab"),
        (
            r#"{{substr 1 3 "hello"}} {{substr 2 99 "hello"}} {{substr -1 2 "hello"}}"#,
            "el llo he",
        ),
        (r#"{{nospace " a b\tc "}}"#, "abc"),
        (
            r#"{{abbrev 5 "hello world"}} {{abbrev 20 "short"}}"#,
            "he... short",
        ),
        (r#"{{initials "first second third"}}"#, "fst"),
        (
            r#"{{contains "ell" "hello"}} {{hasPrefix "he" "hello"}} {{hasSuffix "x" "hello"}}"#,
            "true true false",
        ),
        (r#"{{quote "a\"b" 1}} {{squote "x"}}"#, r#""a\"b" "1" 'x'"#),
        (r#"{{cat "a" 1 nil "b"}}"#, "a 1 b"),
        (r#"{{indent 2 "a\nb"}}|{{nindent 2 "c"}}"#, "  a\n  b|\n  c"),
        (
            r#"{{split "," "a,b"}} {{(split "," "a,b")._1}}"#,
            "map[_0:a _1:b] b",
        ),
        (
            r#"{{splitList "," "a,,b"}} {{splitn "," 2 "a,b,c"}}"#,
            "[a  b] map[_0:a _1:b,c]",
        ),
        (
            r#"{{join "-" (list "a" 1 nil "b")}} {{join "," "solo"}}"#,
            "a-1-b solo",
        ),
        (r#"{{sortAlpha (list "b" "C" "a")}}"#, "[C a b]"),
        (r#"{{toString 12}} {{toString nil}}"#, "12 <nil>"),
        (
            r#"{{trunc -3 "abcdef"}} {{trunc 10 "abc"}} {{trunc 0 "abc"}}"#,
            "def abc ",
        ),
    ];
    for (t, want) in cases {
        assert_eq!(r(t, &d), want, "{t}");
    }
}

#[test]
fn sprig_defaults_and_flow() {
    let d = sys();
    assert_eq!(
        r(
            r#"{{default "d" ""}} {{default "d" 0}} {{default "d" "v"}} {{default "d"}}"#,
            &d
        ),
        "d d v d"
    );
    assert_eq!(
        r(
            "{{empty .Values.empty}} {{empty .Values.list}} {{empty .Values.nope}}",
            &d
        ),
        "true false true"
    );
    assert_eq!(
        r(r#"{{coalesce .Values.nope "" "first" "second"}}"#, &d),
        "first"
    );
    assert_eq!(
        r(
            r#"{{ternary "yes" "no" true}} {{true | ternary "yes" "no"}} {{ternary "yes" "no" false}}"#,
            &d
        ),
        "yes yes no"
    );
    assert!(
        err(r#"{{ternary "a" "b" "notbool"}}"#, &d)
            .contains("wrong type for value; expected bool; got string")
    );
}

#[test]
fn sprig_json_and_base64() {
    let d = json!({"m": {"b": [1, 2.5], "a": "<&>", "n": null}, "s": "hello"});
    assert_eq!(
        r("{{toJson .m}}", &d),
        r#"{"a":"\u003c\u0026\u003e","b":[1,2.5],"n":null}"#
    );
    assert_eq!(
        r("{{toRawJson .m}}", &d),
        r#"{"a":"<&>","b":[1,2.5],"n":null}"#
    );
    assert_eq!(
        r("{{toPrettyJson .m}}", &d),
        "{\n  \"a\": \"\\u003c\\u0026\\u003e\",\n  \"b\": [\n    1,\n    2.5\n  ],\n  \"n\": null\n}"
    );
    assert_eq!(
        r(
            "{{toJson 1e21}} {{toJson 16000000.0}} {{toJson 0.0000001}}",
            &d
        ),
        "1e+21 16000000 1e-7"
    );
    assert_eq!(
        r(
            r#"{{(fromJson "{\"a\":[1,2]}").a}} {{fromJson "nope"}}"#,
            &d
        ),
        "[1 2] <no value>"
    );
    assert_eq!(r("{{b64enc .s}}", &d), "aGVsbG8=");
    assert_eq!(r(r#"{{b64dec "aGVsbG8="}}"#, &d), "hello");
    assert_eq!(
        r(r#"{{b64dec "!!"}}"#, &d),
        "illegal base64 data at input byte 0"
    );
}

#[test]
fn sprig_lists_and_dicts() {
    let d = sys();
    let cases = [
        (r#"{{list 1 "a" nil}}"#, "[1 a <nil>]"),
        (
            r#"{{$d := dict "k" "v" "n" 1}}{{$d.k}} {{get $d "n"}} {{get $d "x"}}|{{hasKey $d "k"}} {{hasKey $d "x"}}"#,
            "v 1 |true false",
        ),
        (r#"{{keys .Values.node.labels}}"#, "[rack zone]"),
        (
            r#"{{first .Values.list}} {{last .Values.list}} {{first list}}"#,
            "a c <no value>",
        ),
        (
            r#"{{rest .Values.list}} {{initial .Values.list}}"#,
            "[b c] [a b]",
        ),
        (
            r#"{{uniq (list 1 2 1 "a" "a")}} {{compact (list 0 1 "" "x")}}"#,
            "[1 2 a] [1 x]",
        ),
        (
            r#"{{reverse .Values.list}} {{append .Values.list "d"}} {{prepend .Values.list "z"}}"#,
            "[c b a] [a b c d] [z a b c]",
        ),
        (
            r#"{{has "b" .Values.list}} {{has "z" .Values.list}} {{has 1 nil}}"#,
            "true false false",
        ),
        (
            r#"{{kindOf .Values.list}} {{kindOf .Values.node}} {{kindIs "string" "x"}}"#,
            "slice map true",
        ),
    ];
    for (t, want) in cases {
        assert_eq!(r(t, &d), want, "{t}");
    }
    assert!(err("{{first \"str\"}}", &d).contains("Cannot find first on type string"));
}

#[test]
fn sprig_numbers() {
    let d = sys();
    let cases = [
        (
            "{{add 1 2 3}} {{add1 9}} {{sub 5 7}} {{mul 2 3 4}} {{div 7 2}} {{mod 7 3}}",
            "6 10 -2 24 3 1",
        ),
        ("{{max 1 9 3}} {{min 4 -2 8}}", "9 -2"),
        (
            r#"{{atoi "42"}} {{atoi "x"}} {{int "0x10"}} {{int64 "12.00"}} {{int 3.9}}"#,
            "42 0 16 12 3",
        ),
        (
            r#"{{float64 "1.5"}} {{float64 2}} {{add .Values.n "2"}}"#,
            "1.5 2 5",
        ),
        ("{{add .Values.f 1}}", "2"),
    ];
    for (t, want) in cases {
        assert_eq!(r(t, &d), want, "{t}");
    }
    assert!(err("{{div 1 0}}", &d).contains("integer divide by zero"));
}

#[test]
fn sprig_regex() {
    let d = json!({});
    let cases = [
        (
            r#"{{regexMatch "^[a-z]+$" "abc"}} {{regexMatch "(" "abc"}}"#,
            "true false",
        ),
        (r#"{{regexFind "[0-9]+" "ab123cd45"}}"#, "123"),
        (
            r#"{{regexFindAll "[0-9]+" "ab123cd45e6" -1}} {{regexFindAll "[0-9]" "123" 2}}"#,
            "[123 45 6] [1 2]",
        ),
        (
            r#"{{regexReplaceAll "a(x*)b" "-ab-axxb-" "${1}W"}}"#,
            "-W-xxW-",
        ),
        (r#"{{regexReplaceAllLiteral "a(x*)b" "-ab-" "$1"}}"#, "-$1-"),
        (
            r#"{{regexSplit "a" "banana" -1}} {{regexSplit "a" "banana" 2}}"#,
            "[b n n ] [b nana]",
        ),
    ];
    for (t, want) in cases {
        assert_eq!(r(t, &d), want, "{t}");
    }
    assert!(err(r#"{{regexFind "(" "x"}}"#, &d).contains("error calling regexFind"));
}

#[test]
fn sprig_environment_and_randomness() {
    let d = json!({});
    assert_eq!(r(r#"{{env "CLB_TEMPLATE_SURELY_UNSET"}}"#, &d), "");
    assert_eq!(r(r#"{{env ""}}{{env "A=B"}}"#, &d), "");
    let u = r("{{uuidv4}}", &d);
    let parts: Vec<&str> = u.split('-').collect();
    assert_eq!(
        parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
        [8, 4, 4, 4, 12]
    );
    assert!(parts[2].starts_with('4'));
    assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"));
    assert_ne!(u, r("{{uuidv4}}", &d));
    let s = r("{{randAlphaNum 32}}", &d);
    assert_eq!(s.len(), 32);
    assert!(s.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert!(
        r("{{randNumeric 8}}", &d)
            .bytes()
            .all(|b| b.is_ascii_digit())
    );
    assert!(
        r("{{randAlpha 8}}", &d)
            .bytes()
            .all(|b| b.is_ascii_alphabetic())
    );
    assert_eq!(r("{{randAscii 5 | len}}{{randAlpha -1}}", &d), "5");
}

// ---- errors ----

#[test]
fn parse_errors() {
    let d = json!({});
    assert_eq!(err("a {{ .x", &d), "template: :1: unclosed action");
    assert_eq!(
        err("\n{{ nope 1 }}", &d),
        "template: :2: function \"nope\" not defined"
    );
    assert!(err("{{if true}}x", &d).contains("unexpected EOF"));
    assert!(err("{{range .x}}x", &d).contains("unexpected EOF"));
    assert!(err("x{{end}}", &d).contains("unexpected {{end}}"));
    assert!(err("{{else}}", &d).contains("unexpected {{else}}"));
    assert!(
        err("{{if true}}a{{else}}b{{else}}c{{end}}", &d).contains("expected end; found {{else}}")
    );
    assert!(err("{{}}", &d).contains("missing value for command"));
    assert!(err("{{if}}{{end}}", &d).contains("missing value for if"));
    assert!(err("{{ (1 }}", &d).contains("unclosed left paren"));
    assert!(err("{{ 1) }}", &d).contains("unexpected right paren"));
    assert!(err("{{ .x | 1 }}", &d).contains("non executable command in pipeline stage 2"));
    assert!(err(r#"{{ "abc }}"#, &d).contains("unterminated quoted string"));
    assert!(err("{{ 12ab }}", &d).contains("bad number syntax"));
    assert!(err("{{ 1 # }}", &d).contains("unrecognized character"));
    assert!(err("{{break}}", &d).contains("outside {{range}}"));
    assert!(err("{{ .x.}}", &d).contains("unexpected"));
}

#[test]
fn execution_errors_name_line_column_and_operand() {
    let d = json!({"s": "x"});
    assert_eq!(
        err("ab\n  {{ trunc \"4\" .s }}", &d),
        "template: :2:5: executing \"\" at <trunc>: wrong type for value; expected int; got string"
    );
    assert_eq!(
        err("{{ upper .missing }}", &d),
        "template: :1:3: executing \"\" at <upper>: invalid value; expected string"
    );
    assert!(err("{{ trunc 1 }}", &d).contains("wrong number of args for trunc: want 2 got 1"));
    assert!(err("{{ .s 1 }}", &d).contains("can't give argument to non-function"));
    assert!(err("{{ nil }}", &d).contains("nil is not a command"));
}

// ---- robustness ----

#[test]
fn nesting_limit() {
    let d = json!({});
    let deep_ifs = "{{if true}}".repeat(65) + &"{{end}}".repeat(65);
    assert!(err(&deep_ifs, &d).contains("nesting deeper than 64"));
    let ok_ifs = "{{if true}}".repeat(60) + "x" + &"{{end}}".repeat(60);
    assert_eq!(r(&ok_ifs, &d), "x");
    let deep_parens = format!("{{{{ {}1{} }}}}", "(".repeat(100), ")".repeat(100));
    assert!(err(&deep_parens, &d).contains("nesting deeper"));
    let chain = format!(
        "{{{{if false}}}}{}{{{{else}}}}last{{{{end}}}}",
        "{{else if false}}".repeat(200)
    );
    assert_eq!(r(&chain, &d), "last");
}

#[test]
fn output_and_value_limits() {
    let d = json!({});
    assert!(err(r#"{{repeat 100000000 "ab"}}"#, &d).contains("error calling repeat"));
    let doubling = r#"{{$s := repeat 1048576 "x"}}{{range 40}}{{$s = cat $s $s}}{{end}}"#;
    assert!(render(doubling, &d).is_err());
    let printing = r#"{{$s := repeat 1048576 "x"}}{{range 40}}{{$s}}{{end}}"#;
    assert!(err(printing, &d).contains("output larger than"));
    assert!(
        err(
            r#"{{replace "" (repeat 1000 "y") (repeat 100000 "x")}}"#,
            &d
        )
        .contains("larger than")
    );
}

#[test]
fn work_budget_stops_runaway_loops() {
    let d = json!({"l": (0..1000).collect::<Vec<_>>()});
    let t = "{{range .l}}{{range $.l}}{{range $.l}}{{end}}{{end}}{{end}}";
    assert!(err(t, &d).contains("work budget"));
    let doubling = r#"{{define "t"}}{{template "t"}}{{template "t"}}{{end}}{{template "t"}}"#;
    assert!(render(doubling, &d).is_err());
}

#[test]
fn large_ranges_are_fine() {
    let d = json!({"l": (0..100_000).collect::<Vec<_>>()});
    let out = r("{{range .l}}{{if eq . 99999}}{{.}}{{end}}{{end}}", &d);
    assert_eq!(out, "99999");
}

#[test]
fn deep_data_is_refused_not_overflowed() {
    let mut v = json!(1);
    for _ in 0..300 {
        v = json!([v]);
    }
    assert!(err("{{.}}", &v).contains("nested deeper"));
    let nest = r#"{{$x := list}}{{range 1000}}{{$x = list $x}}{{end}}{{$x}}"#;
    assert!(err(nest, &json!({})).contains("nested deeper"));
}

#[test]
fn utf8_is_never_split() {
    let d = json!({"s": "héllo wörld ✓"});
    assert_eq!(r("{{trunc 2 .s}}", &d), "hé");
    assert_eq!(r("{{trunc -2 .s}}", &d), " ✓");
    assert_eq!(r("{{substr 1 4 .s}}", &d), "éll");
    assert_eq!(r("{{abbrev 5 .s}}", &d), "hé...");
    assert_eq!(r("{{slice .s 1 2}}", &d), "\u{fffd}");
    assert_eq!(r(r#"{{printf "%.3s|%5s" .s "é"}}"#, &d), "hél|    é");
    for n in -20..20 {
        let _ = render(&format!("{{{{trunc {n} .s}}}}{{{{substr {n} 3 .s}}}}"), &d);
    }
}

#[test]
fn arbitrary_input_never_panics() {
    let d = sys();
    let pieces = [
        "{{", "}}", "{{-", "-}}", " ", "\n", ".", "$", "$x", ":=", "=", "|", "(", ")", ",", "\"",
        "'", "`", "/*", "*/", "if", "else", "end", "range", "with", "define", "template", "block",
        "break", "continue", "nil", "true", "1", "-", "0x", "1e", "é", "✓", "trunc", "index",
        "printf", "\"%", "\\", ".Values", "x",
    ];
    // A deterministic walk over many combinations of the pieces.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..20_000 {
        let mut t = String::new();
        for _ in 0..(seed % 12) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            t.push_str(pieces[(seed % pieces.len() as u64) as usize]);
        }
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let _ = render(&t, &d);
    }
}

#[test]
fn arguments_are_sized_before_functions_copy_them() {
    let d = json!({});
    let t = r#"{{$s := repeat 10000000 "x"}}{{list $s $s | len}}"#;
    assert!(err(t, &d).contains("arguments larger than"));
    let t = r#"{{printf "%1000000v" (list 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18)}}"#;
    assert!(err(t, &d).contains("larger than"));
    // Passing a big value along (variables, pipelines, printing) copies nothing.
    let t = r#"{{$s := repeat 10000000 "x"}}{{$t := $s}}{{$t | len}}"#;
    assert_eq!(r(t, &d), "10000000");
}
