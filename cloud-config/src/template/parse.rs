//! Builds the template tree from tokens, with Go's parse-time checks: functions must exist,
//! variables must be declared in an enclosing scope, `{{end}}`s must balance.

use std::collections::HashMap;

use serde_json::Value;

use super::lex::{Kw, Tok, Token, lex};
use super::{Fail, MAX_NESTING, funcs};

#[derive(Debug, Default)]
pub(super) struct Tree {
    pub root: Vec<Node>,
    /// `{{define}}` and `{{block}}` bodies by name.
    pub defs: HashMap<String, Vec<Node>>,
}

#[derive(Debug)]
pub(super) enum Node {
    Text(String),
    /// Printed unless it declares or assigns variables.
    Action(Pipe),
    /// `if` and `with`; `else if` / `else with` chains are flattened into clauses so a long
    /// chain costs no nesting.
    If(Cond),
    With(Cond),
    Range(Range),
    Template {
        name: String,
        pipe: Option<Pipe>,
        pos: usize,
        end: usize,
    },
    Break,
    Continue,
}

#[derive(Debug)]
pub(super) struct Cond {
    pub clauses: Vec<(Pipe, Vec<Node>)>,
    pub els: Vec<Node>,
}

#[derive(Debug)]
pub(super) struct Range {
    pub pipe: Pipe,
    pub body: Vec<Node>,
    pub els: Vec<Node>,
}

#[derive(Debug)]
pub(super) struct Pipe {
    /// Variables declared (`:=`) or assigned (`=`) with the pipeline's value.
    pub decl: Vec<String>,
    pub assign: bool,
    /// Never empty: the parser rejects empty pipelines.
    pub cmds: Vec<Cmd>,
}

#[derive(Debug)]
pub(super) struct Cmd {
    /// Never empty.
    pub args: Vec<Operand>,
}

#[derive(Debug)]
pub(super) struct Operand {
    pub term: Term,
    /// Field chain applied to the term's value (`.A.B`, `$x.A`, `(pipe).A`).
    pub fields: Vec<String>,
    pub pos: usize,
    pub end: usize,
}

#[derive(Debug)]
pub(super) enum Term {
    Dot,
    Nil,
    Lit(Value),
    Func(String),
    /// A field chain starting at dot; the names are in `Operand::fields`.
    Field,
    Var(String),
    Paren(Box<Pipe>),
}

pub(super) fn parse(src: &str) -> Result<Tree, Fail> {
    let toks = lex(src)?;
    let mut p = Parser {
        toks: &toks,
        i: 0,
        vars: vec!["$".to_owned()],
        depth: 0,
        in_range: 0,
        defs: HashMap::new(),
        eof: src.len(),
    };
    let (root, end) = p.list(true)?;
    match end {
        Stop::Eof => Ok(Tree { root, defs: p.defs }),
        Stop::End(pos) => Err(Fail::parse(pos, "unexpected {{end}}")),
        Stop::Else(pos) => Err(Fail::parse(pos, "unexpected {{else}}")),
    }
}

/// What stopped a list of nodes.
enum Stop {
    Eof,
    End(usize),
    Else(usize),
}

struct Parser<'t> {
    toks: &'t [Token],
    i: usize,
    /// Variables in scope, innermost last.
    vars: Vec<String>,
    depth: usize,
    /// How many `range` bodies enclose the current position (`break`/`continue` need one).
    in_range: usize,
    defs: HashMap<String, Vec<Node>>,
    eof: usize,
}

impl<'t> Parser<'t> {
    fn peek(&self) -> Option<&'t Token> {
        self.toks.get(self.i)
    }

    fn peek_at(&self, ahead: usize) -> Option<&'t Token> {
        self.toks.get(self.i + ahead)
    }

    fn next(&mut self) -> Option<&'t Token> {
        let t = self.toks.get(self.i);
        if t.is_some() {
            self.i += 1;
        }
        t
    }

    fn peek_tok(&self) -> Option<&'t Tok> {
        self.peek().map(|t| &t.tok)
    }

    fn pos(&self) -> usize {
        self.peek().map_or(self.eof, |t| t.pos)
    }

    fn enter(&mut self, pos: usize) -> Result<(), Fail> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(Fail::parse(
                pos,
                format!("nesting deeper than {MAX_NESTING} levels"),
            ));
        }
        Ok(())
    }

    fn expect_close(&mut self, context: &str) -> Result<(), Fail> {
        match self.next() {
            Some(Token {
                tok: Tok::Close, ..
            }) => Ok(()),
            Some(t) => Err(Fail::parse(
                t.pos,
                format!("unexpected {} in {context}", t.tok.describe()),
            )),
            None => Err(Fail::parse(self.eof, "unclosed action")),
        }
    }

    /// Nodes up to `{{end}}`, `{{else}}` (the `else` keyword consumed, the rest of its action
    /// not) or the end of input.
    fn list(&mut self, top: bool) -> Result<(Vec<Node>, Stop), Fail> {
        let mut nodes = Vec::new();
        while let Some(t) = self.next() {
            match &t.tok {
                Tok::Text(s) => nodes.push(Node::Text(s.clone())),
                Tok::Open => {
                    let pos = self.pos();
                    match self.peek_tok() {
                        Some(Tok::Kw(Kw::End)) => {
                            self.next();
                            self.expect_close("end")?;
                            return Ok((nodes, Stop::End(pos)));
                        }
                        Some(Tok::Kw(Kw::Else)) => {
                            self.next();
                            return Ok((nodes, Stop::Else(pos)));
                        }
                        Some(Tok::Kw(k @ (Kw::If | Kw::With))) => {
                            self.next();
                            let cond = self.cond(*k, pos)?;
                            nodes.push(if *k == Kw::If {
                                Node::If(cond)
                            } else {
                                Node::With(cond)
                            });
                        }
                        Some(Tok::Kw(Kw::Range)) => {
                            self.next();
                            nodes.push(Node::Range(self.range(pos)?));
                        }
                        Some(Tok::Kw(Kw::Define)) if top => {
                            self.next();
                            self.define(pos)?;
                        }
                        Some(Tok::Kw(Kw::Template)) => {
                            self.next();
                            nodes.push(self.template(pos)?);
                        }
                        Some(Tok::Kw(Kw::Block)) => {
                            self.next();
                            nodes.push(self.block(pos)?);
                        }
                        Some(Tok::Kw(k @ (Kw::Break | Kw::Continue))) => {
                            self.next();
                            if self.in_range == 0 {
                                return Err(Fail::parse(
                                    pos,
                                    format!("{{{{{}}}}} outside {{{{range}}}}", k.name()),
                                ));
                            }
                            self.expect_close(k.name())?;
                            nodes.push(if *k == Kw::Break {
                                Node::Break
                            } else {
                                Node::Continue
                            });
                        }
                        Some(Tok::Kw(Kw::Define)) => {
                            return Err(Fail::parse(pos, "unexpected <define> in command"));
                        }
                        _ => nodes.push(Node::Action(self.pipeline("command", 1, false)?)),
                    }
                }
                other => {
                    return Err(Fail::parse(
                        t.pos,
                        format!("unexpected {}", other.describe()),
                    ));
                }
            }
        }
        Ok((nodes, Stop::Eof))
    }

    /// `if`/`with` after the keyword, through the matching `{{end}}`.
    fn cond(&mut self, kw: Kw, pos: usize) -> Result<Cond, Fail> {
        self.enter(pos)?;
        let mark = self.vars.len();
        let mut clauses = Vec::new();
        let mut els = Vec::new();
        loop {
            let pipe = self.pipeline(kw.name(), 1, false)?;
            let body_mark = self.vars.len();
            let (body, end) = self.list(false)?;
            self.vars.truncate(body_mark);
            clauses.push((pipe, body));
            match end {
                Stop::Eof => return Err(Fail::parse(self.eof, "unexpected EOF")),
                Stop::End(_) => break,
                Stop::Else(_) => {
                    // `{{else if ...}}` / `{{else with ...}}` continue the chain.
                    if self.peek_tok() == Some(&Tok::Kw(kw)) {
                        self.next();
                        continue;
                    }
                    self.expect_close("else")?;
                    els = self.else_list()?;
                    break;
                }
            }
        }
        self.vars.truncate(mark);
        self.depth -= 1;
        Ok(Cond { clauses, els })
    }

    fn range(&mut self, pos: usize) -> Result<Range, Fail> {
        self.enter(pos)?;
        let mark = self.vars.len();
        let pipe = self.pipeline("range", 2, false)?;
        let body_mark = self.vars.len();
        self.in_range += 1;
        let (body, end) = self.list(false)?;
        self.in_range -= 1;
        self.vars.truncate(body_mark);
        let els = match end {
            Stop::Eof => return Err(Fail::parse(self.eof, "unexpected EOF")),
            Stop::End(_) => Vec::new(),
            Stop::Else(_) => {
                self.expect_close("else")?;
                self.else_list()?
            }
        };
        self.vars.truncate(mark);
        self.depth -= 1;
        Ok(Range { pipe, body, els })
    }

    /// The final `{{else}}` branch, which must end with `{{end}}`.
    fn else_list(&mut self) -> Result<Vec<Node>, Fail> {
        let mark = self.vars.len();
        let (els, end) = self.list(false)?;
        self.vars.truncate(mark);
        match end {
            Stop::End(_) => Ok(els),
            Stop::Else(pos) => Err(Fail::parse(pos, "expected end; found {{else}}")),
            Stop::Eof => Err(Fail::parse(self.eof, "unexpected EOF")),
        }
    }

    fn template_name(&mut self, context: &str) -> Result<String, Fail> {
        match self.next() {
            Some(Token {
                tok: Tok::Str(s), ..
            }) => Ok(s.clone()),
            Some(t) => Err(Fail::parse(
                t.pos,
                format!("unexpected {} in {context} clause", t.tok.describe()),
            )),
            None => Err(Fail::parse(self.eof, "unclosed action")),
        }
    }

    /// A body with its own variable scope (only `$`), as `define` and `block` bodies have.
    fn body(&mut self, pos: usize) -> Result<Vec<Node>, Fail> {
        let vars = std::mem::replace(&mut self.vars, vec!["$".to_owned()]);
        let in_range = std::mem::take(&mut self.in_range);
        self.enter(pos)?;
        let (body, end) = self.list(false)?;
        self.depth -= 1;
        self.vars = vars;
        self.in_range = in_range;
        match end {
            Stop::End(_) => Ok(body),
            Stop::Else(p) => Err(Fail::parse(p, "unexpected {{else}}")),
            Stop::Eof => Err(Fail::parse(self.eof, "unexpected EOF")),
        }
    }

    fn add_def(&mut self, name: String, body: Vec<Node>) {
        // Like Go, an empty definition does not replace a non-empty one.
        if body.is_empty() && self.defs.contains_key(&name) {
            return;
        }
        self.defs.insert(name, body);
    }

    fn define(&mut self, pos: usize) -> Result<(), Fail> {
        let name = self.template_name("define")?;
        self.expect_close("define")?;
        let body = self.body(pos)?;
        self.add_def(name, body);
        Ok(())
    }

    fn template(&mut self, pos: usize) -> Result<Node, Fail> {
        let name = self.template_name("template")?;
        let pipe = if self.peek_tok() == Some(&Tok::Close) {
            self.next();
            None
        } else {
            Some(self.pipeline("template", 1, false)?)
        };
        let end = self
            .toks
            .get(self.i.saturating_sub(1))
            .map_or(pos, |t| t.end);
        Ok(Node::Template {
            name,
            pipe,
            pos,
            end,
        })
    }

    fn block(&mut self, pos: usize) -> Result<Node, Fail> {
        let name = self.template_name("block")?;
        let pipe = self.pipeline("block", 1, false)?;
        let end = self
            .toks
            .get(self.i.saturating_sub(1))
            .map_or(pos, |t| t.end);
        let body = self.body(pos)?;
        self.add_def(name.clone(), body);
        Ok(Node::Template {
            name,
            pipe: Some(pipe),
            pos,
            end,
        })
    }

    /// A pipeline with optional declaration, through its closing `}}` (or `)` when `paren`).
    fn pipeline(&mut self, context: &str, max_decl: usize, paren: bool) -> Result<Pipe, Fail> {
        let start = self.pos();
        let (decl, assign) = self.declaration(context, max_decl)?;
        let mut cmds = Vec::new();
        loop {
            let cmd = self.command()?;
            let t = self.next();
            match (cmd, t.map(|t| &t.tok)) {
                (None, _) if cmds.is_empty() => {
                    return Err(Fail::parse(start, format!("missing value for {context}")));
                }
                (None, _) => return Err(Fail::parse(self.pos(), "missing command")),
                (Some(c), Some(Tok::Pipe)) => cmds.push(c),
                (Some(c), Some(Tok::Close)) if !paren => {
                    cmds.push(c);
                    break;
                }
                (Some(c), Some(Tok::RParen)) if paren => {
                    cmds.push(c);
                    break;
                }
                (Some(_), Some(Tok::Close)) => {
                    return Err(Fail::parse(start, "unclosed left paren"));
                }
                (Some(_), Some(Tok::RParen)) => {
                    return Err(Fail::parse(self.pos(), "unexpected right paren"));
                }
                (Some(_), _) => return Err(Fail::parse(self.eof, "unclosed action")),
            }
        }
        // Only the first stage may be a constant: later ones receive the piped value.
        for (n, c) in cmds.iter().enumerate().skip(1) {
            if let Some(first) = c.args.first()
                && matches!(first.term, Term::Dot | Term::Nil | Term::Lit(_))
                && first.fields.is_empty()
            {
                return Err(Fail::parse(
                    first.pos,
                    format!("non executable command in pipeline stage {}", n + 1),
                ));
            }
        }
        if !assign {
            self.vars.extend(decl.iter().cloned());
        }
        Ok(Pipe { decl, assign, cmds })
    }

    /// `$x :=`, `$x =`, and in `range` also `$i, $v :=`.
    fn declaration(&mut self, context: &str, max_decl: usize) -> Result<(Vec<String>, bool), Fail> {
        let Some(Tok::Var(first)) = self.peek_tok() else {
            return Ok((Vec::new(), false));
        };
        let mut names = vec![first.clone()];
        let mut ahead = 1;
        if self.peek_at(1).map(|t| &t.tok) == Some(&Tok::Comma) {
            match self.peek_at(2).map(|t| &t.tok) {
                Some(Tok::Var(second)) if max_decl >= 2 => {
                    names.push(second.clone());
                    ahead = 3;
                }
                _ if max_decl >= 2 => {
                    return Err(Fail::parse(
                        self.pos(),
                        "range can only initialize variables",
                    ));
                }
                _ => {
                    return Err(Fail::parse(
                        self.pos(),
                        format!("too many declarations in {context}"),
                    ));
                }
            }
        }
        let assign = match self.peek_at(ahead).map(|t| &t.tok) {
            Some(Tok::Declare) => false,
            Some(Tok::Assign) => true,
            _ if ahead == 1 => return Ok((Vec::new(), false)),
            _ => return Err(Fail::parse(self.pos(), "expected := or =")),
        };
        if assign {
            for n in &names {
                if !self.vars.contains(n) {
                    return Err(Fail::parse(self.pos(), format!("undefined variable {n:?}")));
                }
            }
        }
        self.i += ahead + 1;
        Ok((names, assign))
    }

    /// Operands up to `|`, `)` or `}}` (not consumed); `None` when there are none.
    fn command(&mut self) -> Result<Option<Cmd>, Fail> {
        let mut args = Vec::new();
        while let Some(t) = self.peek() {
            if matches!(t.tok, Tok::Pipe | Tok::RParen | Tok::Close) {
                break;
            }
            if !args.is_empty() && !t.space_before {
                return Err(Fail::parse(
                    t.pos,
                    format!("unexpected {} in operand", t.tok.describe()),
                ));
            }
            args.push(self.operand()?);
        }
        Ok((!args.is_empty()).then_some(Cmd { args }))
    }

    fn operand(&mut self) -> Result<Operand, Fail> {
        let Some(t) = self.next() else {
            return Err(Fail::parse(self.eof, "unclosed action"));
        };
        let mut fields = Vec::new();
        let term = match &t.tok {
            Tok::Ident(name) => {
                if funcs::lookup(name).is_none() {
                    return Err(Fail::parse(t.pos, format!("function {name:?} not defined")));
                }
                Term::Func(name.clone())
            }
            Tok::Field(f) => {
                fields.push(f.clone());
                Term::Field
            }
            Tok::Var(v) => {
                if !self.vars.contains(v) {
                    return Err(Fail::parse(t.pos, format!("undefined variable {v:?}")));
                }
                Term::Var(v.clone())
            }
            Tok::Dot => Term::Dot,
            Tok::Nil => Term::Nil,
            Tok::Bool(b) => Term::Lit(Value::Bool(*b)),
            Tok::Num(n) => Term::Lit(n.clone()),
            Tok::Str(s) => Term::Lit(Value::String(s.clone())),
            Tok::LParen => {
                self.enter(t.pos)?;
                let pipe = self.pipeline("parenthesized pipeline", 1, true)?;
                self.depth -= 1;
                Term::Paren(Box::new(pipe))
            }
            other => {
                return Err(Fail::parse(
                    t.pos,
                    format!("unexpected {} in operand", other.describe()),
                ));
            }
        };
        let mut end = self
            .toks
            .get(self.i.saturating_sub(1))
            .map_or(t.end, |t| t.end);
        while let Some(next) = self.peek() {
            let Tok::Field(f) = &next.tok else { break };
            if next.space_before {
                break;
            }
            if matches!(term, Term::Dot | Term::Nil | Term::Lit(_)) {
                return Err(Fail::parse(next.pos, "unexpected . after term"));
            }
            fields.push(f.clone());
            end = next.end;
            self.next();
        }
        Ok(Operand {
            term,
            fields,
            pos: t.pos,
            end,
        })
    }
}
