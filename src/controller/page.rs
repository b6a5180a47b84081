//! Pagination of ListVolumes and ListSnapshots: entries sorted by id, the token is the last
//! id of the previous page. A token that is not an id is ABORTED; one whose entry has since
//! been deleted still works (the listing continues after it), as csi-sanity's pagination
//! test expects.

use super::request::RequestError;
use crate::domain::volume_id::VolumeId;

/// The page of `items` (keyed by `id`) that starts after `starting_token` and holds at most
/// `max_entries` (0: all), with the token of the next page (empty on the last one).
pub(crate) fn page<T>(
    mut items: Vec<T>,
    id: impl Fn(&T) -> &VolumeId,
    max_entries: i32,
    starting_token: &str,
) -> Result<(Vec<T>, String), RequestError> {
    let max = usize::try_from(max_entries).map_err(|_| RequestError::Invalid {
        field: "max_entries",
        reason: format!("{max_entries} is negative"),
    })?;
    let after = if starting_token.is_empty() {
        None
    } else {
        Some(
            starting_token
                .parse::<VolumeId>()
                .map_err(|_| RequestError::BadToken(starting_token.to_string()))?,
        )
    };
    items.sort_by(|a, b| id(a).cmp(id(b)));
    let mut rest = items
        .into_iter()
        .filter(|item| after.as_ref().is_none_or(|t| id(item) > t))
        .peekable();
    let mut entries = Vec::new();
    while let Some(item) = rest.next_if(|_| max == 0 || entries.len() < max) {
        entries.push(item);
    }
    let next_token = match (rest.peek(), entries.last()) {
        (Some(_), Some(last)) => id(last).to_string(),
        _ => String::new(),
    };
    Ok((entries, next_token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<VolumeId> {
        names
            .iter()
            .map(|n| VolumeId::new("vg", n).unwrap())
            .collect()
    }

    #[test]
    fn pages_in_id_order_and_resume_after_a_deleted_token() {
        let all = ids(&["c", "a", "b"]);
        let (first, token) = page(all.clone(), |v| v, 2, "").unwrap();
        assert_eq!(first, ids(&["a", "b"]));
        assert_eq!(token, "vg/b");
        let (last, token) = page(ids(&["a", "c"]), |v| v, 2, "vg/b").unwrap();
        assert_eq!((last, token), (ids(&["c"]), String::new()));
        assert_eq!(page(all, |v| v, 0, "").unwrap().0.len(), 3);
    }

    #[test]
    fn bad_input() {
        assert!(matches!(
            page(ids(&["a"]), |v| v, -1, ""),
            Err(RequestError::Invalid { .. })
        ));
        assert!(matches!(
            page(ids(&["a"]), |v| v, 0, "not a token"),
            Err(RequestError::BadToken(_))
        ));
    }
}
