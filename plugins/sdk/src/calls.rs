//! How the host should run a component's exports, stated by the component itself.
//!
//! [`calls!`](crate::calls) writes a custom section, `ww-memory:calls`, into the
//! component; the host reads it when it loads the component (no call, no instance) and
//! lists it in `ww-memory plugins`. A line per export: `<property> <function>`.
//!
//! - `serial`: calls of these exports never run at once, and all run on one instance of
//!   the component (the same one each time), so that instance may remember between them
//!   what they alone change. Every other export is served by any instance of the pool.
//! - `long_running`: each call runs on an instance of its own under the long deadline
//!   (consolidations), so the pool's instances are not held by it.
//!
//! A custom section rather than an exported function: the host knows it before it
//! instantiates anything, and it costs the component nothing at run time.

/// The section's bytes: `TEXT` as an array, so the static holds the text itself.
#[doc(hidden)]
// Const code cannot use `get`; `N` is the text's length, as `calls!` writes it.
#[allow(clippy::indexing_slicing)]
pub const fn section<const N: usize>(text: &str) -> [u8; N] {
    let bytes = text.as_bytes();
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = bytes[i];
        i += 1;
    }
    out
}

/// State how the host runs some exports (see [the module](crate::calls)):
///
/// ```
/// ww_guest::calls! {
///     serial: ["create-episode"],
///     long_running: ["consolidate-light"],
/// }
/// ```
#[macro_export]
macro_rules! calls {
    ($($property:ident: [$($function:literal),* $(,)?]),* $(,)?) => {
        const _: () = {
            const TEXT: &str = concat!($($(stringify!($property), " ", $function, "\n",)*)*);
            #[unsafe(link_section = "ww-memory:calls")]
            #[used]
            static CALLS: [u8; TEXT.len()] = $crate::calls::section(TEXT);
        };
    };
}
