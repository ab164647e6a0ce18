//! Reachability matrices: rows are clients, columns servers, `.` reachable, `X` blocked.

use std::fmt;

/// A cell of a matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell {
    /// `.`: the connection must succeed
    Reachable,
    /// `X`: the connection must fail
    Blocked,
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cell::Reachable => ".",
            Cell::Blocked => "X",
        })
    }
}

/// An expected reachability matrix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matrix {
    /// server pods, `namespace/name`
    pub columns: Vec<String>,
    /// (client pod, one cell per column)
    pub rows: Vec<(String, Vec<Cell>)>,
}

/// Why a matrix text is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct MatrixError {
    /// 1-based line within the matrix text
    pub line: usize,
    /// what is wrong
    pub message: String,
}

impl Matrix {
    /// Parses the text form; `known_pod` says whether a `namespace/name` exists.
    pub fn parse(text: &str, known_pod: &dyn Fn(&str) -> bool) -> Result<Matrix, MatrixError> {
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.split_whitespace().collect::<Vec<_>>()))
            .filter(|(_, cells)| !cells.is_empty());
        let Some((header_line, header)) = lines.next() else {
            return Err(MatrixError {
                line: 1,
                message: "is empty; the first row lists the columns".into(),
            });
        };
        let columns: Vec<String> = header.iter().skip(1).map(|s| s.to_string()).collect();
        if columns.is_empty() {
            return Err(MatrixError {
                line: header_line,
                message: "the first row lists no columns (its first cell is a placeholder)".into(),
            });
        }
        check_names(&columns, header_line, known_pod, "column")?;
        let mut rows = Vec::new();
        for (line, cells) in lines {
            let Some((name, values)) = cells.split_first() else {
                continue;
            };
            check_names(std::slice::from_ref(&name.to_string()), line, known_pod, "row")?;
            if values.len() != columns.len() {
                return Err(MatrixError {
                    line,
                    message: format!(
                        "row {name} has {} cells, the header has {} columns",
                        values.len(),
                        columns.len()
                    ),
                });
            }
            let mut parsed = Vec::with_capacity(values.len());
            for (column, value) in columns.iter().zip(values) {
                let cell = match *value {
                    "." => Cell::Reachable,
                    "X" | "x" => Cell::Blocked,
                    other => {
                        return Err(MatrixError {
                            line,
                            message: format!("cell {name} -> {column} is {other:?}; expected . or X"),
                        });
                    }
                };
                if column == name && cell == Cell::Blocked {
                    return Err(MatrixError {
                        line,
                        message: format!("diagonal cell {name} -> {column} must be . (a pod always reaches itself)"),
                    });
                }
                parsed.push(cell);
            }
            if rows.iter().any(|(r, _): &(String, Vec<Cell>)| r == name) {
                return Err(MatrixError {
                    line,
                    message: format!("row {name} appears twice"),
                });
            }
            rows.push((name.to_string(), parsed));
        }
        if rows.is_empty() {
            return Err(MatrixError {
                line: header_line,
                message: "has no rows".into(),
            });
        }
        Ok(Matrix { columns, rows })
    }

    /// Every (client, server, expected) cell off the diagonal.
    pub fn cells(&self) -> impl Iterator<Item = (&str, &str, Cell)> {
        self.rows.iter().flat_map(move |(from, cells)| {
            self.columns
                .iter()
                .zip(cells)
                .filter(move |(to, _)| *to != from)
                .map(move |(to, cell)| (from.as_str(), to.as_str(), *cell))
        })
    }
}

fn check_names(names: &[String], line: usize, known_pod: &dyn Fn(&str) -> bool, what: &str) -> Result<(), MatrixError> {
    for (i, n) in names.iter().enumerate() {
        if !n.contains('/') || !known_pod(n) {
            return Err(MatrixError {
                line,
                message: format!("{what} {n:?} is not a pod of the cluster (namespace/name)"),
            });
        }
        if names[..i].contains(n) {
            return Err(MatrixError {
                line,
                message: format!("{what} {n} appears twice"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(p: &str) -> bool {
        ["x/a", "x/b", "y/a"].contains(&p)
    }

    #[test]
    fn parses_and_lists_off_diagonal_cells() {
        let m = Matrix::parse("-   x/a x/b y/a\nx/a  .   X   .\nx/b  .   .   X\n", &known);
        let m = m.unwrap_or_else(|e| panic!("{e}"));
        let cells: Vec<_> = m.cells().collect();
        assert_eq!(cells.len(), 4);
        assert!(cells.contains(&("x/a", "x/b", Cell::Blocked)));
        assert!(cells.contains(&("x/b", "y/a", Cell::Blocked)));
    }

    #[test]
    fn malformed_matrices_are_refused_with_the_line() {
        let cases = [
            ("", 1, "is empty"),
            ("- x/a x/b\nx/a . . .\n", 2, "has 3 cells"),
            ("- x/a x/b\nx/a . ?\n", 2, "expected . or X"),
            ("- x/a q/q\nx/a . .\n", 1, "not a pod"),
            ("- x/a x/b\nx/a X .\n", 2, "diagonal"),
            ("- x/a x/b\n", 1, "no rows"),
            ("- x/a x/b\nx/a . .\nx/a . .\n", 3, "twice"),
        ];
        for (text, line, message) in cases {
            let e = Matrix::parse(text, &known).err();
            assert!(
                e.as_ref()
                    .is_some_and(|e| e.line == line && e.message.contains(message)),
                "{text:?}: expected line {line} {message:?}, got {e:?}"
            );
        }
    }
}
