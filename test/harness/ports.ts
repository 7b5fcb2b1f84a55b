// A free TCP port on 127.0.0.1: the same helper the conformance kit's sandboxes use.
export { freePort } from "../../src/conformance/local.js";
