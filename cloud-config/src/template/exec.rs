//! Walks the tree against the data with Go's execution rules: variable scopes end with the
//! enclosing block, `range` rebinds its variables per element, pipelines pass each stage's
//! value as the last argument of the next.

use std::rc::Rc;

use serde_json::Value;

use super::args::{FnError, Out};
use super::funcs::{self, Imp};
use super::gofmt;
use super::parse::{Cmd, Cond, Node, Operand, Pipe, Range, Term, Tree};
use super::value::{Built, Val, go_type, sorted_keys, truthy, weight};
use super::{BUDGET, Fail, MAX_BYTES, MAX_NESTING, MAX_VALUE_DEPTH};

pub(super) fn execute<'a>(tree: &'a Tree, data: &'a Value) -> Result<String, Fail> {
    let mut ex = Exec {
        tree,
        out: String::new(),
        vars: vec![("$", Val::Ref(data))],
        budget: BUDGET,
        depth: 0,
    };
    ex.walk(&Val::Ref(data), &tree.root)?;
    Ok(ex.out)
}

/// How a list of nodes ended: normally, or by `{{break}}` / `{{continue}}` for the
/// enclosing `range`.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Normal,
    Break,
    Continue,
}

struct Exec<'a> {
    tree: &'a Tree,
    out: String,
    /// Variables in scope, innermost last.
    vars: Vec<(&'a str, Val<'a>)>,
    budget: u64,
    /// Nesting of bodies, parentheses and template calls being executed; with the parser's
    /// own limit this bounds the recursion whatever `{{template}}` calls do.
    depth: usize,
}

fn fail(op: &Operand, msg: impl Into<String>) -> Fail {
    Fail::Exec {
        pos: op.pos,
        end: op.end,
        msg: msg.into(),
    }
}

impl<'a> Exec<'a> {
    fn tick(&mut self, cost: u64) -> Result<(), Fail> {
        if self.budget < cost {
            self.budget = 0;
            return Err(Fail::Plain(
                "execution exceeded its work budget (too many steps or too much data built)".into(),
            ));
        }
        self.budget -= cost;
        Ok(())
    }

    fn emit(&mut self, s: &str) -> Result<(), Fail> {
        if self.out.len().saturating_add(s.len()) > MAX_BYTES {
            return Err(Fail::Plain(format!("output larger than {MAX_BYTES} bytes")));
        }
        self.out.push_str(s);
        Ok(())
    }

    /// Adopts a value built during execution, charging its size to the budget.
    fn own(&mut self, v: Value) -> Result<Val<'a>, Fail> {
        let w = weight(&v, MAX_BYTES).ok_or_else(|| {
            Fail::Plain(format!(
                "value larger than {MAX_BYTES} bytes or nested deeper than {MAX_VALUE_DEPTH} levels"
            ))
        })?;
        self.tick(1 + u64::try_from(w / 16).unwrap_or(u64::MAX))?;
        Ok(Val::Own(Rc::new(Built {
            value: v,
            weight: w,
        })))
    }

    /// Runs `f` one nesting level deeper.
    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, Fail>) -> Result<T, Fail> {
        if self.depth >= 2 * MAX_NESTING {
            return Err(Fail::Plain(format!(
                "execution nested deeper than {} levels",
                2 * MAX_NESTING
            )));
        }
        self.depth += 1;
        let r = f(self);
        self.depth -= 1;
        r
    }

    fn walk(&mut self, dot: &Val<'a>, nodes: &'a [Node]) -> Result<Flow, Fail> {
        for node in nodes {
            self.tick(1)?;
            match node {
                Node::Text(s) => self.emit(s)?,
                Node::Action(p) => {
                    let v = self.pipe(dot, p)?;
                    if p.decl.is_empty() {
                        self.print(&v)?;
                    }
                }
                Node::If(c) | Node::With(c) => {
                    let with = matches!(node, Node::With(_));
                    let flow = self.scoped(|ex| ex.cond(dot, c, with))?;
                    if flow != Flow::Normal {
                        return Ok(flow);
                    }
                }
                Node::Range(r) => self.scoped(|ex| ex.range(dot, r))?,
                Node::Template {
                    name,
                    pipe,
                    pos,
                    end,
                } => self.template(dot, name, pipe.as_ref(), *pos, *end)?,
                Node::Break => return Ok(Flow::Break),
                Node::Continue => return Ok(Flow::Continue),
            }
        }
        Ok(Flow::Normal)
    }

    /// Runs `f` in a variable scope that ends with it, whatever the outcome.
    fn scoped<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, Fail>) -> Result<T, Fail> {
        let mark = self.vars.len();
        let r = self.nested(f);
        self.vars.truncate(mark);
        r
    }

    /// `if` / `with` clauses in order, then the `else` list.
    fn cond(&mut self, dot: &Val<'a>, c: &'a Cond, with: bool) -> Result<Flow, Fail> {
        for (pipe, body) in &c.clauses {
            let v = self.pipe(dot, pipe)?;
            if truthy(&v) {
                return self.walk(if with { &v } else { dot }, body);
            }
        }
        self.walk(dot, &c.els)
    }

    fn range(&mut self, dot: &Val<'a>, r: &'a Range) -> Result<(), Fail> {
        let v = self.cmds(dot, &r.pipe)?;
        let mark = self.vars.len();
        let mut ran = false;
        match v {
            Val::Ref(Value::Array(items)) => {
                for (i, x) in items.iter().enumerate() {
                    ran = true;
                    let key = Val::made(Value::from(i));
                    if self.iteration(r, mark, key, Val::Ref(x))? == Flow::Break {
                        break;
                    }
                }
            }
            Val::Ref(Value::Object(m)) => {
                for k in sorted_keys(m) {
                    let Some(x) = m.get(k) else { continue };
                    ran = true;
                    let key = Val::made(Value::String(k.clone()));
                    if self.iteration(r, mark, key, Val::Ref(x))? == Flow::Break {
                        break;
                    }
                }
            }
            Val::Own(rc) if matches!(rc.value, Value::Array(_) | Value::Object(_)) => {
                // A built collection: take its elements (copying only if still shared).
                let owned = Rc::try_unwrap(rc).map_or_else(|rc| rc.value.clone(), |b| b.value);
                let pairs: Vec<(Value, Value)> = match owned {
                    Value::Array(items) => items
                        .into_iter()
                        .enumerate()
                        .map(|(i, x)| (Value::from(i), x))
                        .collect(),
                    Value::Object(m) => {
                        let mut pairs: Vec<(String, Value)> = m.into_iter().collect();
                        pairs.sort_by(|a, b| a.0.cmp(&b.0));
                        pairs
                            .into_iter()
                            .map(|(k, x)| (Value::String(k), x))
                            .collect()
                    }
                    _ => Vec::new(),
                };
                for (k, x) in pairs {
                    ran = true;
                    let key = Val::made(k);
                    let elem = self.own(x)?;
                    if self.iteration(r, mark, key, elem)? == Flow::Break {
                        break;
                    }
                }
            }
            v => match &*v {
                Value::Null => {}
                // Go 1.22: ranging over an integer n counts 0..n.
                Value::Number(n) if n.as_i64().is_some() || n.as_u64().is_some() => {
                    let n = n.as_u64().unwrap_or(0);
                    for i in 0..n {
                        ran = true;
                        let e = Val::made(Value::from(i));
                        if self.iteration(r, mark, e.clone(), e)? == Flow::Break {
                            break;
                        }
                    }
                }
                other => {
                    let msg = format!("range can't iterate over {}", gofmt::to_v(other));
                    return Err(match r.pipe.cmds.first().and_then(|c| c.args.first()) {
                        Some(op) => fail(op, msg),
                        None => Fail::Plain(msg),
                    });
                }
            },
        }
        if !ran {
            self.vars.truncate(mark);
            self.walk(dot, &r.els)?;
        }
        Ok(())
    }

    /// One `range` step: fresh variables for this element, then the body with dot = element.
    fn iteration(
        &mut self,
        r: &'a Range,
        mark: usize,
        key: Val<'a>,
        elem: Val<'a>,
    ) -> Result<Flow, Fail> {
        self.tick(1)?;
        self.vars.truncate(mark);
        let assign = r.pipe.assign;
        match r.pipe.decl.as_slice() {
            [] => {}
            [v] => self.bind(v, elem.clone(), assign)?,
            [k, v, ..] => {
                self.bind(k, key, assign)?;
                self.bind(v, elem.clone(), assign)?;
            }
        }
        self.walk(&elem, &r.body)
    }

    fn template(
        &mut self,
        dot: &Val<'a>,
        name: &str,
        pipe: Option<&'a Pipe>,
        pos: usize,
        end: usize,
    ) -> Result<(), Fail> {
        let tree: &'a Tree = self.tree;
        let Some(body) = tree.defs.get(name) else {
            return Err(Fail::Exec {
                pos,
                end,
                msg: format!("no such template {name:?}"),
            });
        };
        let new_dot = match pipe {
            Some(p) => self.pipe(dot, p)?,
            None => Val::null(),
        };
        // A template sees only its own `$`.
        let saved = std::mem::replace(&mut self.vars, vec![("$", new_dot.clone())]);
        let r = self.nested(|ex| ex.walk(&new_dot, body));
        self.vars = saved;
        r.map(|_| ())
    }

    fn bind(&mut self, name: &'a str, v: Val<'a>, assign: bool) -> Result<(), Fail> {
        if !assign {
            self.vars.push((name, v));
            return Ok(());
        }
        match self.vars.iter_mut().rev().find(|(n, _)| *n == name) {
            Some(slot) => {
                slot.1 = v;
                Ok(())
            }
            None => Err(Fail::Plain(format!("undefined variable: {name}"))),
        }
    }

    fn lookup(&self, name: &str, op: &Operand) -> Result<Val<'a>, Fail> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| fail(op, format!("undefined variable: {name}")))
    }

    fn print(&mut self, v: &Val<'a>) -> Result<(), Fail> {
        match &**v {
            Value::Null => self.emit("<no value>"),
            Value::String(s) => self.emit(s),
            other => {
                let s = gofmt::to_v(other);
                self.emit(&s)
            }
        }
    }

    /// A pipeline's value, declared or assigned to its variables.
    fn pipe(&mut self, dot: &Val<'a>, p: &'a Pipe) -> Result<Val<'a>, Fail> {
        let v = self.cmds(dot, p)?;
        for name in &p.decl {
            self.bind(name, v.clone(), p.assign)?;
        }
        Ok(v)
    }

    fn cmds(&mut self, dot: &Val<'a>, p: &'a Pipe) -> Result<Val<'a>, Fail> {
        let mut fin = None;
        for c in &p.cmds {
            fin = Some(self.command(dot, c, fin)?);
        }
        Ok(fin.unwrap_or_else(Val::null))
    }

    /// One pipeline stage; `fin` is the previous stage's value, the last argument here.
    fn command(
        &mut self,
        dot: &Val<'a>,
        c: &'a Cmd,
        fin: Option<Val<'a>>,
    ) -> Result<Val<'a>, Fail> {
        self.tick(1)?;
        let Some((first, rest)) = c.args.split_first() else {
            return Ok(fin.unwrap_or_else(Val::null));
        };
        match &first.term {
            Term::Func(name) if first.fields.is_empty() => self.call(dot, name, first, rest, fin),
            Term::Nil => Err(fail(first, "nil is not a command")),
            _ if !rest.is_empty() || fin.is_some() => {
                Err(fail(first, "can't give argument to non-function"))
            }
            _ => self.operand(dot, first),
        }
    }

    fn operand(&mut self, dot: &Val<'a>, op: &'a Operand) -> Result<Val<'a>, Fail> {
        let mut v = match &op.term {
            Term::Dot | Term::Field => dot.clone(),
            Term::Nil => Val::null(),
            Term::Lit(v) => Val::Ref(v),
            Term::Func(name) => self.call(dot, name, op, &[], None)?,
            Term::Var(name) => self.lookup(name, op)?,
            Term::Paren(p) => self.nested(|ex| ex.pipe(dot, p))?,
        };
        for f in &op.fields {
            v = self.field(v, f, op)?;
        }
        Ok(v)
    }

    /// `.name` of a value: a map key (missing is `<no value>`, like Go's maps); nil stays nil.
    fn field(&mut self, v: Val<'a>, name: &str, op: &Operand) -> Result<Val<'a>, Fail> {
        let not_map = |other: &Value| {
            fail(
                op,
                format!("can't evaluate field {name} in type {}", go_type(other)),
            )
        };
        match v {
            Val::Ref(r) => match r {
                Value::Object(m) => Ok(m.get(name).map_or_else(Val::null, Val::Ref)),
                Value::Null => Ok(Val::null()),
                other => Err(not_map(other)),
            },
            Val::Own(rc) => match &rc.value {
                Value::Object(m) => match m.get(name) {
                    Some(x) => self.own(x.clone()),
                    None => Ok(Val::null()),
                },
                Value::Null => Ok(Val::null()),
                other => Err(not_map(other)),
            },
        }
    }

    fn call(
        &mut self,
        dot: &Val<'a>,
        name: &str,
        op: &'a Operand,
        args: &'a [Operand],
        fin: Option<Val<'a>>,
    ) -> Result<Val<'a>, Fail> {
        let Some(def) = funcs::lookup(name) else {
            return Err(fail(op, format!("function {name:?} not defined")));
        };
        let got = args.len() + usize::from(fin.is_some());
        if got < def.min || def.max.is_some_and(|m| got > m) {
            let msg = match def.max {
                Some(m) if m == def.min => {
                    format!("wrong number of args for {name}: want {m} got {got}")
                }
                _ => format!(
                    "wrong number of args for {name}: want at least {} got {got}",
                    def.min
                ),
            };
            return Err(fail(op, msg));
        }
        let res = match def.imp {
            Imp::ShortCircuit => return self.short_circuit(dot, name == "and", args, fin),
            Imp::Make(f) => {
                let vals = self.args(dot, args, fin)?;
                let refs: Vec<&Value> = vals.iter().map(|v| &**v).collect();
                f(&refs).map(Out::New)
            }
            Imp::Pick(f) => {
                let vals = self.args(dot, args, fin)?;
                f(&vals)
            }
        };
        match res {
            Ok(Out::Keep(v)) => Ok(v),
            Ok(Out::New(v)) => self.own(v),
            Err(FnError::Type(m)) => Err(fail(op, m)),
            Err(FnError::Call(m)) => Err(fail(op, format!("error calling {name}: {m}"))),
        }
    }

    fn args(
        &mut self,
        dot: &Val<'a>,
        args: &'a [Operand],
        fin: Option<Val<'a>>,
    ) -> Result<Vec<Val<'a>>, Fail> {
        let mut vals = Vec::with_capacity(args.len() + 1);
        for a in args {
            vals.push(self.operand(dot, a)?);
        }
        vals.extend(fin);
        // Functions copy their arguments into what they build (`list $s $s ...`): refuse
        // before copying rather than after.
        let total = vals
            .iter()
            .fold(0usize, |t, v| t.saturating_add(v.owned_weight()));
        if total > MAX_BYTES {
            return Err(Fail::Plain(format!(
                "arguments larger than {MAX_BYTES} bytes"
            )));
        }
        Ok(vals)
    }

    /// `and` returns the first false argument or the last; `or` the first true one or the
    /// last. Later arguments are not evaluated once the answer is known (Go 1.18+).
    fn short_circuit(
        &mut self,
        dot: &Val<'a>,
        and: bool,
        args: &'a [Operand],
        fin: Option<Val<'a>>,
    ) -> Result<Val<'a>, Fail> {
        let mut last = Val::null();
        for a in args {
            let v = self.operand(dot, a)?;
            if truthy(&v) != and {
                return Ok(v);
            }
            last = v;
        }
        Ok(fin.unwrap_or(last))
    }
}
