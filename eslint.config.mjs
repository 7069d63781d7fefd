// npm run lint: ESLint's recommended rules over every JavaScript file we write (the formatting is
// prettier's: .prettierrc.json).
import js from '@eslint/js'
import globals from 'globals'

export default [
  { ignores: ['binding.js', 'node_modules/', 'target/', 'crates/'] },
  js.configs.recommended,
  {
    files: ['**/*.js', '**/*.cjs'],
    languageOptions: { sourceType: 'commonjs', ecmaVersion: 2024, globals: { ...globals.node } },
  },
  {
    files: ['**/*.mjs'],
    languageOptions: { sourceType: 'module', ecmaVersion: 2024, globals: { ...globals.node } },
  },
  {
    files: ['examples/runners/jest/**', 'bench/runners/**'],
    languageOptions: { globals: { ...globals.jest } },
  },
  {
    rules: {
      // `catch {}` and `_`-prefixed names say "unused on purpose".
      'no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
    },
  },
]
