//! The one place the host runs `bindgen!`: the interfaces the host implements.

wasmtime::component::bindgen!({
    world: "host-capabilities",
    path: "../wit",
});
