//! `#[traced]`: a span around a function, with `Err` returns recorded as errors.

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::quote;
use syn::parse::{Parse, ParseStream};
use syn::{Ident, ItemFn, LitStr, ReturnType, Token, Type, parse_macro_input};

/// Arguments: an optional span name (defaults to the function's name) and an optional
/// `kind = Internal | Server | Client | Producer | Consumer`.
struct TracedArgs {
    name: Option<LitStr>,
    kind: Option<Ident>,
}

impl Parse for TracedArgs {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut args = TracedArgs {
            name: None,
            kind: None,
        };
        if input.peek(LitStr) {
            args.name = Some(input.parse()?);
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        while !input.is_empty() {
            let key: Ident = input.parse()?;
            input.parse::<Token![=]>()?;
            if key == "kind" {
                let kind: Ident = input.parse()?;
                const KINDS: [&str; 5] = ["Internal", "Server", "Client", "Producer", "Consumer"];
                if !KINDS.iter().any(|k| kind == k) {
                    return Err(syn::Error::new(
                        kind.span(),
                        "kind must be one of Internal, Server, Client, Producer, Consumer",
                    ));
                }
                args.kind = Some(kind);
            } else {
                return Err(syn::Error::new(key.span(), "expected `kind = ...`"));
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(args)
    }
}

/// True when the return type is spelled `Result<..>` (any path ending in `Result`).
fn returns_result(output: &ReturnType) -> bool {
    match output {
        ReturnType::Type(_, ty) => match ty.as_ref() {
            Type::Path(path) => path
                .path
                .segments
                .last()
                .is_some_and(|s| s.ident == "Result"),
            _ => false,
        },
        ReturnType::Default => false,
    }
}

/// Wrap a function in a span.
///
/// ```ignore
/// #[traced("episodic.recall", kind = Internal)]
/// fn recall(query: &str) -> Result<Vec<Hit>, Error> { ... }
/// ```
///
/// An `Err` return sets the span's status to ERROR with an `exception` event (its
/// `Display`, or `Debug` when it has no `Display`); a panic is recorded by the SDK's hook.
#[proc_macro_attribute]
pub fn traced(attr: TokenStream, item: TokenStream) -> TokenStream {
    let args = parse_macro_input!(attr as TracedArgs);
    let mut function = parse_macro_input!(item as ItemFn);
    if function.sig.asyncness.is_some() {
        return syn::Error::new_spanned(
            function.sig.fn_token,
            "#[traced] does not support async fn",
        )
        .to_compile_error()
        .into();
    }
    let name = args
        .name
        .unwrap_or_else(|| LitStr::new(&function.sig.ident.to_string(), Span::call_site()));
    let kind = args
        .kind
        .unwrap_or_else(|| Ident::new("Internal", Span::call_site()));
    let output = &function.sig.output;
    let result_type = match output {
        ReturnType::Type(_, ty) => quote!(#ty),
        ReturnType::Default => quote!(()),
    };
    let body = &function.block;
    let record = if returns_result(output) {
        quote! {
            if let ::core::result::Result::Err(__ww_error) = &__ww_result {
                #[allow(unused_imports)]
                use ::ww_guest::__private::{ViaDebug as _, ViaDisplay as _};
                let __ww_text = (&::ww_guest::__private::ErrorText(__ww_error)).error_text();
                __ww_span.record_error(::ww_guest::__private::type_name_of(__ww_error), __ww_text);
            }
        }
    } else {
        quote!()
    };
    function.block = syn::parse_quote!({
        let __ww_span = ::ww_guest::__private::start(#name, ::ww_guest::SpanKind::#kind);
        #[allow(clippy::redundant_closure_call)]
        let __ww_result: #result_type = (move || -> #result_type #body)();
        #record
        drop(__ww_span);
        __ww_result
    });
    quote!(#function).into()
}
