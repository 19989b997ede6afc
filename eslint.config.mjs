// The project's lint rules, run by `npm run lint` (and so by `npm test`: a finding fails CI).
// Type-aware: the rules that need the types (floating promises, assertions that change nothing) are the ones that
// catch real defects in a daemon. Formatting is prettier's job (`npm run format`), not the linter's.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'var/', 'certs/'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // An async function without await is how a handler or an interface method turns a synchronous throw into a
      // rejection; the rule would make each of those a plain function that throws.
      '@typescript-eslint/require-await': 'off',
      // The byte parsers (DBC scanner, ASN.1) compare raw character and tag codes with named constants on purpose.
      '@typescript-eslint/no-unsafe-enum-comparison': 'off',
      // The agent strips control characters from untrusted text on purpose: those patterns are the point.
      'no-control-regex': 'off',
      // A rethrown or passed-on failure is whatever was caught: it is not wrapped again.
      '@typescript-eslint/only-throw-error': ['error', { allowThrowingUnknown: true }],
      '@typescript-eslint/prefer-promise-reject-errors': ['error', { allowThrowingUnknown: true }],
      // A timer a closure clears, started once the closure exists.
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
      // A leading underscore names what is deliberately unused (a destructured field left out, a required parameter).
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrorsIgnorePattern: '^_', ignoreRestSiblings: true },
      ],
      // node:test's describe/it return promises the runner itself awaits.
      '@typescript-eslint/no-floating-promises': [
        'error',
        { allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['describe', 'it', 'test', 'suite'] }] },
      ],
    },
  },
  // The plain-JavaScript scripts (the test runner, the schema writer, this file): no types to check them with.
  {
    files: ['**/*.mjs'],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: {
      ...tseslint.configs.disableTypeChecked.languageOptions,
      globals: { process: 'readonly', console: 'readonly', URL: 'readonly' },
    },
  },
);
