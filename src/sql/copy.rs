//! `COPY ... FROM STDIN` in a query string. sqlparser reads such a statement the way psql
//! scripts write it: a `;` and then inline data up to `\.`, so everything after the `;` (the
//! next statements of the string) would be taken as data and never analysed. PostgreSQL
//! runs those statements after the COPY, so a string holding one is parsed a statement at a
//! time instead, each COPY with nothing after its `;`.

use sqlparser::ast::Statement;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, TokenWithSpan};

/// Whether some statement of the string is a COPY from STDIN.
pub(crate) fn has_copy_from_stdin(tokens: &[TokenWithSpan]) -> bool {
    statements(tokens).any(is_copy_from_stdin)
}

/// Parses each `;`-separated statement on its own. None when one does not parse or leaves
/// tokens over.
pub(crate) fn parse_one_by_one(tokens: Vec<TokenWithSpan>) -> Option<Vec<Statement>> {
    statements(&tokens)
        .filter(|statement| !is_blank(statement))
        .map(parse_piece)
        .collect()
}

/// One statement's tokens parsed on their own; None when they do not parse or leave tokens
/// over.
pub(crate) fn parse_piece(statement: &[TokenWithSpan]) -> Option<Statement> {
    let mut chunk = statement.to_vec();
    if is_copy_from_stdin(statement) {
        // What sqlparser expects before the inline data, which here is none.
        chunk.push(TokenWithSpan::wrap(Token::SemiColon));
    }
    let mut parser = Parser::new(&PostgreSqlDialect {}).with_tokens_with_locations(chunk);
    let parsed = parser.parse_statement().ok()?;
    while parser.consume_token(&Token::SemiColon) {}
    (parser.peek_token().token == Token::EOF).then_some(parsed)
}

/// Only whitespace and comments: no statement.
pub(crate) fn is_blank(statement: &[TokenWithSpan]) -> bool {
    statement
        .iter()
        .all(|t| matches!(t.token, Token::Whitespace(_)))
}

/// The statements of a token stream, split at `;`. Semicolons inside literals, quoted names
/// and dollar-quoted bodies are inside their tokens, so they do not split.
pub(crate) fn statements(tokens: &[TokenWithSpan]) -> impl Iterator<Item = &[TokenWithSpan]> {
    tokens.split(|t| t.token == Token::SemiColon)
}

/// `COPY ... FROM STDIN`: the first word is COPY and `FROM STDIN` follows somewhere.
fn is_copy_from_stdin(statement: &[TokenWithSpan]) -> bool {
    let mut words = statement.iter().filter_map(|t| match &t.token {
        Token::Word(w) if w.quote_style.is_none() => Some(w.keyword),
        Token::Whitespace(_) => None,
        _ => Some(Keyword::NoKeyword),
    });
    if words.next() != Some(Keyword::COPY) {
        return false;
    }
    let rest: Vec<Keyword> = words.collect();
    rest.windows(2)
        .any(|pair| pair == [Keyword::FROM, Keyword::STDIN])
}

#[cfg(test)]
mod tests {
    use crate::sql::{Action, Analyzer, ColumnRef, Kind};

    #[test]
    fn copy_from_stdin_is_understood_and_what_follows_it_is_analysed() {
        let analyzer = Analyzer::new(&[], 10);
        for sql in [
            "COPY t FROM STDIN",
            "copy t (a, b) from stdin (format csv)",
            "COPY t FROM STDIN WITH (FORMAT binary);",
        ] {
            let a = analyzer.analyze(sql);
            assert!(a.understood(), "{sql}");
            assert_eq!(a.statements.len(), 1, "{sql}");
            assert_eq!(a.statements[0].kind, Kind::CopyIn, "{sql}");
            assert!(
                a.statements[0].accesses.contains(&(0, Action::Insert)),
                "{sql}"
            );
        }
        let a = analyzer.analyze("COPY t FROM STDIN; DELETE FROM secrets");
        assert!(a.understood());
        let kinds: Vec<Kind> = a.statements.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, [Kind::CopyIn, Kind::Delete]);
        assert_eq!(a.statements[1].tables[0].name, "secrets");
        let columns = &analyzer.analyze("COPY t (ssn) FROM STDIN").statements[0].columns;
        assert!(columns.iter().any(|c| c.column
            == ColumnRef::Of {
                table: 0,
                name: "ssn".into()
            }));
        // Garbage after a COPY is not parsed away.
        assert!(!analyzer
            .analyze("COPY t FROM STDIN; nonsense here")
            .understood());
        // A semicolon inside a literal does not split.
        let a = analyzer.analyze("COPY t FROM STDIN; SELECT ';'");
        assert_eq!(a.statements.len(), 2);
    }
}
