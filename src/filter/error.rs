//! [`FilterError`]: why an expression does not compile, or does not give an answer for one
//! change.

/// Why a filter expression failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The expression is not valid CEL (a config error: nothing starts).
    #[error("{}", compile_line(*line, *column, message))]
    Compile {
        /// 1-based line of the first problem in the expression, when the parser knows it.
        line: Option<usize>,
        /// 1-based column of the first problem, when the parser knows it.
        column: Option<usize>,
        /// The parser's description.
        message: String,
    },
    /// Evaluation failed for this change: a missing field, a type mismatch, a division by
    /// zero.
    #[error("evaluation failed: {0}")]
    Evaluate(String),
    /// The expression evaluated to something other than a bool.
    #[error("the expression gave a {0}, not a bool")]
    NotBool(String),
}

/// `line L, column C: message`, or the message alone without a position.
fn compile_line(line: Option<usize>, column: Option<usize>, message: &str) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!("line {line}, column {column}: {message}"),
        _ => message.to_owned(),
    }
}
