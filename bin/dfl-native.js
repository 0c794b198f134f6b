#!/usr/bin/env node
// The `dfl-native` command. A launcher tracked in git with its executable bit, so `npx dfl-native`
// runs in a fresh clone: npm runs a package's own bin file directly, and the TypeScript build
// writes dist/cli/cli.js without one.
import '../dist/cli/cli.js';
