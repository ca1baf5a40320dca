import { Component, inject } from '@angular/core';
import { MatIconRegistry } from '@angular/material/icon';
import { RouterOutlet } from '@angular/router';

/** The merchant dashboard's root: routes decide between signing in and the signed-in shell. */
@Component({
  selector: 'pm-root',
  imports: [RouterOutlet],
  template: `<router-outlet />`,
})
export class Root {
  constructor() {
    // Icons come from the self-hosted Material Symbols font, not from a CDN.
    inject(MatIconRegistry).setDefaultFontSetClass('material-symbols-outlined');
  }
}
