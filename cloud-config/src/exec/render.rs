//! Rendering the Go templates in step values, as yip does (`crate::template`), against the
//! data of `crate::template_data`: hostnames against `{UUID, Random, MachineID,
//! ProtectedID}`, everything else yip renders (commands, `if`, file contents, entities,
//! environment values) against `{Values: <system information>}`.

use std::borrow::Cow;

use crate::ctx::Ctx;
use crate::error::StepError;
use crate::template::{has_actions, render};
use crate::template_data;

/// A hostname rendered; a template that fails to render is an error, as in yip.
pub(crate) fn hostname<'a>(ctx: &Ctx, name: &'a str) -> Result<Cow<'a, str>, StepError> {
    if !has_actions(name) {
        return Ok(Cow::Borrowed(name));
    }
    let data = template_data::hostname_data(&ctx.root);
    render(name, &data)
        .map(Cow::Owned)
        .map_err(|e| StepError::Invalid(format!("hostname {name:?}: {e}")))
}

/// `text` rendered against `.Values`. A template that fails to render is used as written,
/// with a warning and a note in the report, as yip does.
pub(crate) fn values<'a>(ctx: &mut Ctx, text: &'a str) -> Cow<'a, str> {
    if !has_actions(text) {
        return Cow::Borrowed(text);
    }
    let root = ctx.root.clone();
    let data = ctx
        .template_values
        .get_or_insert_with(|| template_data::values(&root));
    match render(text, data) {
        Ok(rendered) => Cow::Owned(rendered),
        Err(e) => {
            tracing::warn!("{e}; used as written");
            ctx.notes
                .push(format!("template not rendered, used as written: {e}"));
            Cow::Borrowed(text)
        }
    }
}
