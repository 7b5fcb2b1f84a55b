// The agent's view of the tool version: it lives in src/version.ts, which the operator imports too.
export { TOOL_NAME, TOOL_VERSION } from "../version.js";
