//! exp
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod t {
    use serde::Deserialize;
    use serde_saphyr::Spanned;
    #[derive(Debug)]
    enum Node {
        Scalar(String),
        Seq(Vec<Spanned<Node>>),
        Map(Vec<(Spanned<String>, Spanned<Node>)>),
        Null,
    }
    impl<'de> Deserialize<'de> for Node {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Node;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("any")
                }
                fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                    Ok(Node::Scalar(v.into()))
                }
                fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                    Ok(Node::Scalar(format!("i{v}")))
                }
                fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
                    Ok(Node::Scalar(format!("u{v}")))
                }
                fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                    Ok(Node::Scalar(format!("b{v}")))
                }
                fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                    Ok(Node::Scalar(format!("f{v}")))
                }
                fn visit_unit<E>(self) -> Result<Node, E> {
                    Ok(Node::Null)
                }
                fn visit_none<E>(self) -> Result<Node, E> {
                    Ok(Node::Null)
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut a: A,
                ) -> Result<Node, A::Error> {
                    let mut v = vec![];
                    while let Some(x) = a.next_element()? {
                        v.push(x)
                    }
                    Ok(Node::Seq(v))
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut a: A,
                ) -> Result<Node, A::Error> {
                    let mut v = vec![];
                    while let Some(k) = a.next_key()? {
                        let val = a.next_value()?;
                        v.push((k, val))
                    }
                    Ok(Node::Map(v))
                }
            }
            d.deserialize_any(V)
        }
    }
    #[derive(Debug, Deserialize)]
    struct S {
        a: String,
        b: String,
        c: String,
        d: Option<String>,
        e: u32,
    }
    struct Raw(String);
    impl<'de> Deserialize<'de> for Raw {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Raw;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("s")
                }
                fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
                    Ok(Raw(format!("s:{v}")))
                }
                fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
                    Ok(Raw(format!("u:{v}")))
                }
                fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
                    Ok(Raw(format!("i:{v}")))
                }
                fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
                    Ok(Raw(format!("b:{v}")))
                }
            }
            d.deserialize_string(V)
        }
    }
    #[test]
    fn exp() {
        let y = "a: x\nb: 0644\nc: 1\nd: true\ne: 0644\nlist:\n  - q: 1\n    r: [1, 2]\n";
        let n: Spanned<Node> = serde_saphyr::from_str(y).unwrap();
        println!("{n:#?}");
        let s: Result<S, _> = serde_saphyr::from_str(y);
        println!("{s:?}");
        #[derive(Deserialize)]
        struct R {
            a: Raw,
            b: Raw,
            c: Raw,
            d: Raw,
            e: Raw,
        }
        let r: R = serde_saphyr::from_str(y).unwrap();
        println!("{} {} {} {} {}", r.a.0, r.b.0, r.c.0, r.d.0, r.e.0);
        let r: R = serde_saphyr::from_str("a: 'x'\nb: \"0644\"\nc: 1.5\nd: yes\ne: 3\n").unwrap();
        println!("{} {} {} {} {}", r.a.0, r.b.0, r.c.0, r.d.0, r.e.0);
        for bad in [
            "a: [1, 2\n",
            "a:\n  b: 1\n   c: 2\n",
            "a: b: c\n",
            "a: 1\na: 2\n",
            "- a\nb: 1\n",
            "a: *x\n",
        ] {
            let e = serde_saphyr::from_str::<Spanned<Node>>(bad).unwrap_err();
            println!(
                "{bad:?} => {:?} | {}",
                e.location().map(|l| (l.line(), l.column())),
                e.without_snippet()
            );
        }
    }
}
