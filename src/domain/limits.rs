//! Caps on what one payload may hold, chosen from what real resumes need with a wide margin, so
//! that a hostile or broken payload costs bounded memory and bounded rows (set in `[limits]`).
//!
//! | what | cap | beyond it |
//! |---|---|---|
//! | `id` | 128 bytes | validation failure: an id cut short would name another candidate |
//! | `educationInfo`, `experienceInfo` | 50 entries each | validation failure: a history cut short is wrong, not odd (raise the cap and replay) |
//! | `offerAttachmentUrls` | 20 links | validation failure, likewise |
//! | a URL | 2048 bytes | that link is dropped with a warning (not fetched) |
//! | any other text | 1000 characters | cut, with a warning (the whole text stays in `raw_payload`) |
//! | warnings | 50 | the rest are counted in one last warning `{"field":"warnings","message":"N more warnings not shown"}` |

/// See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest `id`, in bytes.
    pub id_max_bytes: usize,
    /// Most entries in `educationInfo`, and in `experienceInfo`.
    pub max_entries: usize,
    /// Most links in `offerAttachmentUrls`.
    pub max_links: usize,
    /// Longest URL, in bytes.
    pub url_max_bytes: usize,
    /// Longest text field, in characters.
    pub text_max_chars: usize,
    /// Most warnings stored per candidate (plus one that counts the rest).
    pub max_warnings: usize,
}

impl Default for Limits {
    /// The defaults of `config/default.toml`.
    fn default() -> Limits {
        Limits {
            id_max_bytes: 128,
            max_entries: 50,
            max_links: 20,
            url_max_bytes: 2048,
            text_max_chars: 1000,
            max_warnings: 50,
        }
    }
}
