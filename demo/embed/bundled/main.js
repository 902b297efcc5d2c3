// Defines <selfcond-playground> (the page's markup uses it); esbuild bundles the package in.
import 'selfcond/playground';
